"""Architecture rules: core/ is pure, and no float sneaks onto a money path."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "ratecard"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_imports_only_the_standard_library_and_itself() -> None:
    offenders = []
    for path in sorted((SRC / "core").rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if name.startswith("ratecard.core") or top == "__future__":
                continue
            if top not in sys.stdlib_module_names:
                offenders.append(f"{path.relative_to(SRC)}: {name}")
    assert offenders == []


def test_core_does_no_io() -> None:
    forbidden = {"open", "print", "input"}
    offenders = []
    for path in sorted((SRC / "core").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in forbidden
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {node.func.id}()")
    assert offenders == []


def _annotations(tree: ast.AST) -> list[ast.expr]:
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
        elif isinstance(node, ast.arg) and node.annotation is not None:
            found.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
            found.append(node.returns)
    return found


def test_no_float_parsing_literals_or_annotations_in_src() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(SRC)
        for node in ast.walk(tree):
            is_call = isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            if is_call and node.func.id == "float":  # type: ignore[attr-defined]
                offenders.append(f"{where}:{node.lineno} float()")
            if isinstance(node, ast.Constant) and isinstance(node.value, float):
                offenders.append(f"{where}:{node.lineno} float literal")
        for annotation in _annotations(tree):
            if any(isinstance(n, ast.Name) and n.id == "float" for n in ast.walk(annotation)):
                offenders.append(f"{where}:{annotation.lineno} float annotation")
    assert offenders == []
