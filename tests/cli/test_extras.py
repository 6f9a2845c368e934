"""A command that needs an optional install (`pip install 'rnncap[train]'`, `'rnncap[serve]'`)
names it in one line, exit 2, no traceback: the command line runs in processes where the extra's
packages cannot be imported (`support.blocked`), as after a plain `pip install rnncap`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rnncap.cli._extras import EXTRAS, missing_extra
from support.blocked import blocked_env
from support.inference import EXAMPLES, REPO

TORCH = ("torch", "torchvision")  # what a runtime-only install lacks

CASES = [  # (arguments, packages blocked, command named, extra, module named)
    (["train", "--data", "d"], TORCH, "rnncap train", "train", "torch"),
    (["export", "default", "out"], TORCH, "rnncap export", "train", "torch"),
    (["lm", "--data", "d"], TORCH, "rnncap lm", "train", "torch"),
    (
        ["evaluate", "--data", "d", "--backend", "torch"],
        TORCH,
        "rnncap evaluate --backend torch",
        "train",
        "torch",
    ),
    (
        ["features", "--data", "d", "--out", "o", "--backend", "torch"],
        TORCH,
        "rnncap features --backend torch",
        "train",
        "torch",
    ),
    (
        ["convert-show-tell", "e", "d", "v", "o"],
        TORCH,
        "rnncap convert-show-tell",
        "train",
        "torch",
    ),
    (
        ["caption", "--backend", "torch", str(EXAMPLES / "cat.jpg")],
        TORCH,
        "rnncap caption --backend torch",
        "train",
        "torch",
    ),
    (
        ["caption", "--device", "cuda", str(EXAMPLES / "cat.jpg")],
        TORCH,
        "rnncap caption --device cuda",
        "train",
        "torch",
    ),
    (
        ["caption", "--attention-out", "maps", str(EXAMPLES / "cat.jpg")],
        TORCH,
        "rnncap caption --attention-out maps",
        "train",
        "torch",
    ),
    # scores need pycocoevalcap (with torch or without): without --json there is nothing to do
    (["evaluate", "--data", "d"], ("pycocoevalcap",), "rnncap evaluate", "train", "pycocoevalcap"),
    (
        ["evaluate", "--data", "d"],
        (*TORCH, "pycocoevalcap"),
        "rnncap evaluate",
        "train",
        "pycocoevalcap",
    ),
    (
        ["serve"],
        ("fastapi", "starlette", "uvicorn", "python_multipart"),
        "rnncap serve",
        "serve",
        "fastapi",
    ),
    (["serve"], ("python_multipart",), "rnncap serve", "serve", "python_multipart"),
]


@pytest.mark.parametrize("args, blocked, command, extra, module", CASES)
def test_a_missing_extra_is_named_in_one_line(tmp_path, args, blocked, command, extra, module):
    run = subprocess.run(
        [sys.executable, "-m", "rnncap.cli", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=blocked_env(blocked, tmp_path / "site"),
        timeout=300,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [
        f"rnncap: error: '{command}' needs the {extra} extra ({module} is not installed): "
        f"pip install 'rnncap[{extra}]'"
    ]
    assert run.stdout == ""


def test_help_needs_no_extra(tmp_path):
    blocked = [module for modules in EXTRAS.values() for module in modules]
    run = subprocess.run(
        [sys.executable, "-m", "rnncap.cli", "--help"],
        capture_output=True,
        text=True,
        env=blocked_env(blocked, tmp_path / "site"),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "caption" in run.stdout and "train" in run.stdout


def test_a_module_of_no_extra_is_not_blamed_on_one():
    assert missing_extra(ModuleNotFoundError("x", name="numpy"), "rnncap caption") is None
    error = ModuleNotFoundError("x", name="torch.nn")
    assert "the train extra (torch is not installed)" in missing_extra(error, "rnncap train")


def _pyproject_extras() -> dict[str, set[str]]:
    """pyproject.toml's extras: name -> the distributions it lists (normalised names)."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {
        extra: {_norm(Requirement(r).name) for r in requirements}
        for extra, requirements in project["optional-dependencies"].items()
    }


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_the_extras_table_matches_pyproject(extra):
    """Each module named for an extra is installed by a distribution that extra lists (or one
    of their requirements), and each distribution it lists brings a module named for it."""
    from importlib.metadata import packages_distributions, requires

    listed = _pyproject_extras()[extra]
    brought = {m: {_norm(d) for d in ds} for m, ds in packages_distributions().items()}
    wanted = set(listed)
    for dist in listed:
        wanted |= {_norm(_requirement_name(r)) for r in requires(dist) or []}
    for module in EXTRAS[extra]:
        assert brought.get(module, set()) & wanted, f"{module}: not installed by the {extra} extra"
    for dist in listed:
        modules = {m for m in EXTRAS[extra] if dist in brought.get(m, set())}
        assert modules, f"{dist} of the {extra} extra: none of its modules in EXTRAS[{extra!r}]"


def _requirement_name(requirement: str) -> str:
    from packaging.requirements import Requirement

    return Requirement(requirement).name
