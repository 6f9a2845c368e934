"""`rnncap features` without torch (`support.blocked`, as after a plain `pip install rnncap`):
the model folder's encoder.onnx in ONNX Runtime on NumPy arrays writes the cache that the torch
path writes with the same graph (`--backend onnx`), bit for bit; a choice it cannot serve is one
line, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rnncap.cli import main
from support.blocked import blocked_env
from support.inference import example_images
from support.runtime import default_with_encoder
from support.tinydata import cache_contents, write_flickr8k

TORCH = ("torch", "torchvision")


def _features_without_torch(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rnncap.cli", "features", "--quiet", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=blocked_env(TORCH, tmp_path / "site"),
        timeout=300,
    )


@pytest.mark.parametrize("mirrored", [[], ["--mirrored"]])
def test_features_without_torch_equal_the_torch_onnx_path(tmp_path, capsys, mirrored):
    data = write_flickr8k(tmp_path / "data", example_images())
    model = str(default_with_encoder(tmp_path))
    common = ["--data", str(data), "--model", model, "--batch-size", "2", "--shard-size", "3"]
    run = _features_without_torch(tmp_path, *common, "--out", str(tmp_path / "np"), *mirrored)
    assert run.returncode == 0, run.stderr
    assert "5 images, 0 already cached, 5 encoded" in run.stdout
    argv = ["features", *common, "--out", str(tmp_path / "pt"), "--backend", "onnx", "--quiet"]
    assert main(argv + ["--device", "cpu", *mirrored]) == 0, capsys.readouterr().err
    name = "efficientnet_lite0" + ("-mirrored" if mirrored else "")
    assert cache_contents(tmp_path / "np" / name) == cache_contents(tmp_path / "pt" / name)
    again = _features_without_torch(tmp_path, *common, "--out", str(tmp_path / "np"), *mirrored)
    assert "5 images, 5 already cached, 0 encoded" in again.stdout  # resumes


def test_an_encoder_the_graph_is_not_is_one_line(tmp_path):
    data = write_flickr8k(tmp_path / "data", example_images()[:1])
    model = str(default_with_encoder(tmp_path))
    args = ["--data", str(data), "--out", str(tmp_path / "out"), "--model", model]
    run = _features_without_torch(tmp_path, *args, "--encoder", "resnet152")
    assert run.returncode == 2
    assert run.stderr.splitlines()[-1] == (
        f"rnncap: error: --encoder resnet152: without torch the encoder is --model {model}'s "
        "encoder.onnx (efficientnet_lite0)"
    )
    assert not (tmp_path / "out").exists()
