"""The documentation runs: every ```python block of docs/*.md and README.md, and the MkDocs build.

The blocks of one page run in order in one namespace (a tutorial builds on its earlier blocks),
from the repository root; a failure points at the page and the line in it. Blocks that are not
meant to run use another info string (```bash, ```text, ```json).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md"]

# An opening fence (``` or more backticks, optionally indented) and its info string.
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<info>[^`]*)$")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the first code line, code) for each ```python block of a Markdown text."""
    blocks: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence = len(match["indent"]), match["fence"]
        language = (match["info"].split() or [""])[0].lower()
        body, i = [], i + 1
        while i < len(lines) and not re.match(rf"^ *{fence}`*\s*$", lines[i]):
            body.append(lines[i][indent:] if not lines[i][:indent].strip() else lines[i].lstrip())
            i += 1
        if language in ("python", "py"):
            blocks.append((i - len(body) + 1, "\n".join(body) + "\n"))
        i += 1  # past the closing fence
    return blocks


def test_python_blocks_are_found():
    text = "intro\n```python\nx = 1\n```\n\n```bash\nls\n```\n  ```py\n  y = 2\n  ```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (10, "y = 2\n")]


@pytest.fixture
def one_thread():
    """The examples are tiny: more threads would only fight the other test worker for cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_page_code_runs(page: Path, monkeypatch, one_thread):
    blocks = python_blocks(page.read_text(encoding="utf-8"))
    if not blocks:
        pytest.skip("no python blocks")
    monkeypatch.chdir(REPO)  # the pages' paths (examples/...) are relative to the repository
    name = str(page.relative_to(REPO))
    namespace: dict = {"__name__": "__main__"}
    for line, code in blocks:
        # Padded so that a traceback gives the line number in the Markdown file.
        compiled = compile("\n" * (line - 1) + code, name, "exec")
        try:
            exec(compiled, namespace)
        except Exception as error:
            message = f"{name}: the python block at line {line} failed: {error!r}"
            raise AssertionError(message) from error
    if "matplotlib.pyplot" in sys.modules:  # figures a page made
        sys.modules["matplotlib.pyplot"].close("all")


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[dev]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings-python not installed")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "index.html").is_file()
