"""The code is as `ruff format` writes it (src, tests, benchmarks, scripts), as `make lint`
checks, with no comment that turns the formatter off for a line or a block."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ["src", "tests", "benchmarks", "scripts"]
# A file `ruff format --check` would change: "Would reformat: PATH" (older ruff), or a
# diagnostic pointing at it, " --> PATH:LINE:COLUMN" (newer ruff).
WOULD_REFORMAT = re.compile(r"^(?:Would reformat: (\S+)|\s*--> (\S+?):\d+:\d+)$", re.MULTILINE)
FORMATTER_OFF = re.compile(r"#\s*(?:fmt|yapf):\s*(?:skip|off)\b")


def _ruff() -> str | None:
    beside_python = Path(sys.executable).with_name("ruff")
    return str(beside_python) if beside_python.is_file() else shutil.which("ruff")


def test_code_is_ruff_formatted():
    binary = _ruff()
    if binary is None:
        pytest.skip("ruff not installed (pip install ruff, in the dev extra)")
    result = subprocess.run(
        [binary, "format", "--check", "--no-cache", *FOLDERS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    files = sorted({a or b for a, b in WOULD_REFORMAT.findall(result.stdout)})
    assert not files, f"`ruff format` would reformat {len(files)} files: {', '.join(files)}"
    assert result.returncode == 0, result.stdout + result.stderr


def test_formatter_is_never_turned_off():
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for folder in FOLDERS
        for path in sorted((REPO / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if FORMATTER_OFF.search(line)
    ]
    assert not found, f"formatter turned off (remove the comment, let ruff format): {found}"
