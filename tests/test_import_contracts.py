"""The import-linter contracts of pyproject.toml hold: the layers of the package, a NumPy-only
reference, and argparse/web frameworks only in the command line and the web service."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _lint_imports() -> str | None:
    beside_python = Path(sys.executable).with_name("lint-imports")
    return str(beside_python) if beside_python.is_file() else shutil.which("lint-imports")


def test_import_contracts_are_kept():
    binary = _lint_imports()
    if binary is None:
        pytest.skip("lint-imports not installed (pip install import-linter, in the dev extra)")
    result = subprocess.run(
        [binary, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout and "0 broken" in result.stdout
