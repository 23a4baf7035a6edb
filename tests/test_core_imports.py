"""The serving core stays light: importing the ingress loads no TensorFlow, torch or ultralytics, and deployments/
take only the core from pipeline/. Checked in a fresh interpreter, as tests/conftest.py imports torch first."""

from __future__ import annotations

import ast
import subprocess
import sys

from pipeline.core.paths import REPO_ROOT

HEAVY = ("tensorflow", "torch", "ultralytics", "tf_keras", "tensorflow_hub")


def modules_after_import(*modules: str) -> set[str]:
    code = f"import sys, {', '.join(modules)}; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True)
    return set(result.stdout.split())


def test_importing_the_ingress_and_the_core_loads_no_model_framework():
    modules = ("deployments.recognizer", "deployments.app", "pipeline.core.photo_to_answer", "pipeline.core.models")
    loaded = modules_after_import(*modules)
    assert set(modules) <= loaded
    heavy = sorted(name for name in loaded if name.split(".")[0] in HEAVY)
    assert not heavy, f"importing {modules} loaded {heavy[:5]}"


def test_deployments_import_only_the_core_from_pipeline():
    outside_core = []
    for path in sorted((REPO_ROOT / "deployments").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            outside_core += [f"{path.relative_to(REPO_ROOT)}: {name}" for name in names
                             if name.split(".")[0] == "pipeline" and not name.startswith("pipeline.core")]
    assert not outside_core, outside_core
