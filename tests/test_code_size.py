"""Every module in src/rnncap stays readable: at most 400 lines, no function over 60 lines, and a
name that says which module it is (shared only by a command and its library module, or by the
same cell in PyTorch and in NumPy)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "rnncap"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_modules_are_short():
    lengths = {p: len(p.read_text(encoding="utf-8").splitlines()) for p in _modules()}
    long = {str(p.relative_to(SRC)): n for p, n in lengths.items() if n > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_functions_fit_on_a_screen():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = node.end_lineno - first + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(SRC)}:{node.lineno} {node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _is_mirror(packages: set[str]) -> bool:
    """`cli/X.py` is the command `rnncap X`; `nn/`, `numpy_ref/`: one cell in two libraries."""
    return (len(packages) == 2 and "cli" in packages) or packages == {"nn", "numpy_ref"}


def test_module_names_are_used_once_except_by_mirrors():
    packages = defaultdict(set)
    for path in _modules():
        if path.name not in ("__init__.py", "__main__.py"):
            packages[path.name].add(path.parent.relative_to(SRC).as_posix())
    shared = {name: sorted(p) for name, p in packages.items() if len(p) > 1}
    clashes = {name: p for name, p in shared.items() if not _is_mirror(set(p))}
    assert not clashes, f"modules sharing a name: {clashes}"
