"""`rnncap evaluate` without torch (`support.blocked`): the runtime captions the split's files as
`rnncap caption` does (the pinned captions of the examples); scores with pycocoevalcap as before,
and without it --json gets the predictions, then one line names the extra the scores need."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rnncap.engine.metrics import METRICS
from support.blocked import blocked_env
from support.inference import example_images
from support.runtime import default_with_encoder
from support.tinydata import write_flickr8k

TORCH = ("torch", "torchvision")
EXPECTED = Path(__file__).resolve().parents[1] / "expected" / "default_model_captions.json"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(data folder, model folder with encoder.onnx, the pinned captions of the examples)."""
    tmp = tmp_path_factory.mktemp("evaluate")
    data, model = write_flickr8k(tmp / "data", example_images()), default_with_encoder(tmp)
    return data, model, json.loads(EXPECTED.read_text(encoding="utf-8"))["captions"]


def _evaluate_without(blocked, tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rnncap.cli", "evaluate", "--quiet", "--workers", "0", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=blocked_env(blocked, tmp_path / "site"),
        timeout=300,
    )


def _check_predictions(got: list, pinned: dict) -> None:
    assert {p["image"]: p["caption"] for p in got} == pinned
    assert all(p["score"] < 0 for p in got)  # log-probabilities


def test_without_torch_nor_scorer_the_predictions_are_written(setup, tmp_path):
    data, model, expected = setup
    out = tmp_path / "eval.json"
    args = ["--data", str(data), "--model", str(model), "--json", str(out)]
    run = _evaluate_without((*TORCH, "pycocoevalcap"), tmp_path, *args)
    assert run.returncode == 2
    assert run.stdout.splitlines() == [f"test split, 5 images, beam 3, model {model}"]
    assert run.stderr.splitlines()[-1] == (
        "rnncap: error: 'rnncap evaluate' needs the train extra (pycocoevalcap is not "
        "installed): pip install 'rnncap[train]'; scores not computed, the predictions are in "
        f"{out}"
    )
    result = json.loads(out.read_text())
    assert result["scores"] is None and result["images"] == 5
    _check_predictions(result["predictions"], expected)


def test_without_torch_the_runtime_is_scored(setup, tmp_path):
    data, model, expected = setup
    out = tmp_path / "eval.json"
    args = ["--data", str(data), "--model", str(model), "--json", str(out)]
    run = _evaluate_without(TORCH, tmp_path, *args)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert set(result["scores"]) == set(METRICS)
    assert all(name in run.stdout for name in METRICS)
    _check_predictions(result["predictions"], expected)
