"""`pip install rnncap` captions without torch: the wheel built from this tree, installed into a
fresh virtual environment with its runtime dependencies from the package index, gives the pinned
captions of examples/ with `rnncap caption` and `rnncap evaluate` (predictions only: the scores
need the train extra), the feature cache of examples/ that the torch path writes with
`rnncap features`, and torch cannot be imported there.

Skips when the package index cannot be reached; the captions and features, when the bundled
default model has no encoder.onnx (the runtime's image encoder).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from rnncap.models.files import DEFAULT_MODEL
from rnncap.models.onnx_graph import ENCODER_FILE

REPO = Path(__file__).resolve().parents[1]
EXPECTED = REPO / "tests" / "expected" / "default_model_captions.json"
INDEX = "https://pypi.org/simple/"
# what the copy of the tree the wheel is built from leaves out
BUILD_LEFTOVERS = (
    ".git",
    ".venv",
    "build",
    "dist",
    "site",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "runs",
    "cache",
    "features",
)


def _clean_env() -> dict[str, str]:
    """This environment without what points Python at the source tree or the test's packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _run(command: list, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=timeout,
    )


def _index_unreachable() -> str | None:
    """Why the package index cannot be reached, or None when it can."""
    index = os.environ.get("PIP_INDEX_URL", INDEX)
    try:
        with urllib.request.urlopen(index.rstrip("/") + "/onnxruntime/", timeout=20):
            return None
    except OSError as error:  # URLError, timeouts
        return f"{index}: {error}"


def _or_skip(step: subprocess.CompletedProcess, what: str) -> None:
    """A failed pip step: a skip when the index is unreachable, else a failure with pip's words."""
    if step.returncode == 0:
        return
    reason = _index_unreachable()
    if reason is not None:
        pytest.skip(f"{what}: the package index is unreachable ({reason})")
    pytest.fail(f"{what} failed:\n{step.stdout[-3000:]}\n{step.stderr[-3000:]}")


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel and its runtime dependencies only."""
    tmp = tmp_path_factory.mktemp("runtime-install")
    source = tmp / "source"  # a clean copy: nothing stale from an earlier build/ gets in
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*BUILD_LEFTOVERS))
    wheel = _run(
        [sys.executable, "-m", "pip", "wheel", source, "--no-deps", "-w", tmp / "wheel"], cwd=tmp
    )
    _or_skip(wheel, "pip wheel")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, env=_clean_env())
    (built,) = (tmp / "wheel").glob("rnncap-*.whl")
    _or_skip(_run([venv / "bin" / "python", "-m", "pip", "install", built], cwd=tmp), "pip install")
    return venv


@pytest.mark.slow
def test_the_runtime_install_has_no_torch(runtime_venv, tmp_path):
    for module in ("torch", "torchvision", "matplotlib", "fastapi"):
        found = _run([runtime_venv / "bin" / "python", "-c", f"import {module}"], cwd=tmp_path)
        assert found.returncode != 0, f"{module} is installed by plain `pip install rnncap`"


@pytest.mark.slow
def test_the_runtime_install_captions_the_examples(runtime_venv, tmp_path):
    if not (DEFAULT_MODEL / ENCODER_FILE).is_file():
        pytest.skip(
            f"the bundled default model has no {ENCODER_FILE} yet: the runtime install "
            f"cannot caption with it"
        )
    run = _run([runtime_venv / "bin" / "rnncap", "caption", REPO / "examples"], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    captions = dict(line.split("\t") for line in run.stdout.splitlines())
    pinned = json.loads(EXPECTED.read_text(encoding="utf-8"))["captions"]
    assert {Path(path).name: text for path, text in captions.items()} == pinned


@pytest.mark.slow
def test_the_runtime_install_caches_the_features_of_the_torch_path(runtime_venv, tmp_path, capsys):
    from rnncap.cli import main
    from support.inference import example_images
    from support.tinydata import cache_contents, write_flickr8k

    if not (DEFAULT_MODEL / ENCODER_FILE).is_file():
        pytest.skip(f"the bundled default model has no {ENCODER_FILE} yet")
    data = write_flickr8k(tmp_path / "data", example_images())
    common = ["--data", data, "--batch-size", "2", "--shard-size", "3", "--quiet"]
    run = _run([runtime_venv / "bin" / "rnncap", "features", *common, "--out", "np"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert "efficientnet_lite0: 5 images, 0 already cached, 5 encoded" in run.stdout
    torch_path = ["--out", tmp_path / "pt", "--model", "default", "--backend", "onnx"]
    assert main(["features", *map(str, common + torch_path)]) == 0, capsys.readouterr().err
    name = "efficientnet_lite0"
    assert cache_contents(tmp_path / "np" / name) == cache_contents(tmp_path / "pt" / name)


@pytest.mark.slow
def test_the_runtime_install_evaluates_without_scores(runtime_venv, tmp_path):
    from support.inference import example_images
    from support.tinydata import write_flickr8k

    if not (DEFAULT_MODEL / ENCODER_FILE).is_file():
        pytest.skip(f"the bundled default model has no {ENCODER_FILE} yet")
    data = write_flickr8k(tmp_path / "data", example_images())
    args = ["evaluate", "--data", data, "--json", "eval.json", "--quiet"]
    run = _run([runtime_venv / "bin" / "rnncap", *args], cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines()[-1] == (
        "rnncap: error: 'rnncap evaluate' needs the train extra (pycocoevalcap is not installed): "
        "pip install 'rnncap[train]'; scores not computed, the predictions are in eval.json"
    )
    result = json.loads((tmp_path / "eval.json").read_text(encoding="utf-8"))
    pinned = json.loads(EXPECTED.read_text(encoding="utf-8"))["captions"]
    assert result["scores"] is None
    assert {p["image"]: p["caption"] for p in result["predictions"]} == pinned


@pytest.mark.slow
def test_the_runtime_install_names_the_extra_a_command_needs(runtime_venv, tmp_path):
    run = _run([runtime_venv / "bin" / "rnncap", "train", "--data", "d"], cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        "rnncap: error: 'rnncap train' needs the train extra (torch is not installed): "
        "pip install 'rnncap[train]'"
    ]
