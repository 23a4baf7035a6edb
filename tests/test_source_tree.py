"""Rules of the source tree that keep it readable: a module or class name means one thing across deployments/ and
pipeline/ (a reader who meets `catalog.py` or `Product` knows which one), and no source file grows past
MAX_LINES; and pyproject.toml lists every package, or an install lacks it. Read from the files, so it costs no
import."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.core.paths import REPO_ROOT

TREES = ("deployments", "pipeline")
MAX_LINES = 450
LONG_FILES: dict[str, str] = {}  # temporary exceptions, each to be split: none today


def sources(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((REPO_ROOT / folder).rglob("*.py"))


def names_by_tree(names_in: Callable[[Path], list[str]]) -> dict[str, dict[str, list[str]]]:
    """Per tree, each name and the files that define it."""
    found: dict[str, dict[str, list[str]]] = {}
    for tree in TREES:
        found[tree] = {}
        for path in sources(tree):
            for name in names_in(path):
                found[tree].setdefault(name, []).append(str(path.relative_to(REPO_ROOT)))
    return found


def twice(found: dict[str, dict[str, list[str]]]) -> dict[str, list[str]]:
    first, second = (found[tree] for tree in TREES)
    return {name: first[name] + second[name] for name in sorted(first.keys() & second.keys())}


def test_no_module_name_is_in_both_deployments_and_pipeline():
    found = names_by_tree(lambda path: [] if path.name == "__init__.py" else [path.stem])
    assert not twice(found), twice(found)


def test_no_class_name_is_defined_in_both_deployments_and_pipeline():
    def classes(path: Path) -> list[str]:
        return [node.name for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(node, ast.ClassDef)]

    found = names_by_tree(classes)
    assert not twice(found), twice(found)


def test_no_source_file_is_longer_than_max_lines():
    lengths = {str(path.relative_to(REPO_ROOT)): len(path.read_text(encoding="utf-8").splitlines())
               for path in sources("deployments", "pipeline", "load_tests", "tests")}
    too_long = {name: lines for name, lines in lengths.items() if lines > MAX_LINES and name not in LONG_FILES}
    assert not too_long, f"over {MAX_LINES} lines: {too_long}"
    no_longer = sorted(name for name in LONG_FILES if lengths.get(name, 0) <= MAX_LINES)
    assert not no_longer, f"no longer over {MAX_LINES} lines: take them out of LONG_FILES: {no_longer}"


def test_pyproject_lists_every_package():
    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    packages = {".".join(path.parent.relative_to(REPO_ROOT).parts) for path in sources("deployments", "pipeline", "load_tests")
                if path.name == "__init__.py"}
    assert listed == packages
