"""pipeline/ is layered by job (pipeline/__init__.py says the order): a package imports only from the ones before
it, counting every import, those inside functions too; an import inside a function is there only to keep a heavy
framework out of a light import, never to hide an edge of the graph; and no modules import each other in a
circle. Read from the source with `ast`, so it costs no import."""

from __future__ import annotations

import ast
from pathlib import Path

from pipeline.core.paths import REPO_ROOT

PIPELINE = REPO_ROOT / "pipeline"
LAYERS = ("core", "data", "classification_metrics", "train", "evaluation", "release")
"""The order of pipeline/'s parts, lowest first: a part imports only from itself and the parts before it."""

LOCAL_IMPORTS = {  # (module, what it imports inside a function): why
    ("pipeline.train.finetune", "pipeline.train.cosine_head"): "cosine_head imports torch at module level",
    ("pipeline.train.finetune_network", "pipeline.train.cosine_head"): "cosine_head imports torch at module level",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): ast.parse(path.read_text(encoding="utf-8")) for path in sorted(PIPELINE.rglob("*.py"))}


def imported(node: ast.AST) -> list[str]:
    """The pipeline modules an import statement names (`from pipeline.x import y` names pipeline.x.y when that is a
    module, else pipeline.x)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        assert node.level == 0, "relative imports are not used here"
        base = node.module or ""
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    else:
        return []
    return [name for name in names if name.split(".")[0] == "pipeline"]


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the pipeline package itself (its docstring only)


def imports_by_module(function_local: bool | None = None) -> dict[str, set[str]]:
    """Each pipeline module's imports of pipeline modules: all of them (None), only those inside a function (True),
    or only those outside any function (False)."""
    found: dict[str, set[str]] = {}
    for module, tree in MODULES.items():
        found[module] = set()
        stack: list[tuple[ast.AST, bool]] = [(tree, False)]
        while stack:
            node, inside = stack.pop()
            if function_local is None or inside == function_local:
                found[module].update(imported(node))
            in_function = inside or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            stack.extend((child, in_function) for child in ast.iter_child_nodes(node))
    return found


def test_every_part_of_the_pipeline_has_a_layer():
    assert {layer(module) for module in MODULES} - {None} == set(LAYERS)


def test_each_part_imports_only_from_the_parts_before_it():
    upward = [f"{module} imports {name}" for module, names in imports_by_module().items() for name in sorted(names)
              if layer(module) is not None and LAYERS.index(layer(name) or "core") > LAYERS.index(layer(module) or "core")]
    assert not upward, upward


def test_function_local_imports_only_keep_a_framework_out():
    local = {(module, name) for module, names in imports_by_module(function_local=True).items() for name in names}
    assert local == set(LOCAL_IMPORTS), f"unexplained: {sorted(local - set(LOCAL_IMPORTS))}, gone: {sorted(set(LOCAL_IMPORTS) - local)}"


def test_no_modules_import_each_other_in_a_circle():
    graph = {module: {name for name in names if name != module and name in MODULES}
             for module, names in imports_by_module(function_local=False).items()}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " → ".join((*path[path.index(module):], module))
        if module not in done:
            for name in sorted(graph[module]):
                visit(name, (*path, module))
            done.add(module)

    for module in sorted(graph):
        visit(module, ())
