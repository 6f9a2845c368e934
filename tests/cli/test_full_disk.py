"""Outputs that do not fit (a full disk, a quota, a file-size limit): `export`, `train` and
`features` answer with one line naming the output, exit code 2, and leave nothing half written.

The kernel's file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored) makes every write past it fail
with EFBIG, the way a full disk fails with ENOSPC, whatever library does the writing."""

from __future__ import annotations

import resource
import signal
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from rnncap.cli import main
from rnncap.models.encoders import Encoder
from support.tinydata import make_dataset


@contextmanager
def file_size_limit(size: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def _one_error_line(capsys) -> str:
    """The error line, the last on stderr after the data set summaries; nothing on stdout."""
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("rnncap: error: ")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    return errors[0]


def _no_hidden_leftovers(folder) -> None:
    assert [p.name for p in folder.rglob(".*")] == []


def _tiny_encoder(*args, **kwargs) -> Encoder:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU6())
    return Encoder("tiny", trunk, 8, True, 32, mean=[0.5] * 3, std=[0.25] * 3)


def test_export_that_does_not_fit(model_dir, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnx")
    import rnncap.models.encoders as encoders

    monkeypatch.setattr(encoders, "build_encoder", _tiny_encoder)
    out = tmp_path / "exported"
    with file_size_limit(1000):  # the graph and the weights are larger
        code = main(["export", str(model_dir), str(out)])
    assert code == 2
    assert _one_error_line(capsys) == f"rnncap: error: {out}: cannot write (File too large)"
    assert not out.exists()
    _no_hidden_leftovers(tmp_path)


def test_train_that_does_not_fit(tmp_path, capsys):
    root = make_dataset(tmp_path / "tiny")
    out = tmp_path / "run"
    argv = ["train", "--data", str(root), "--features", str(root / "cache"), "--encoder", "fake"]
    argv += ["--out", str(out), "--epochs", "1", "--min-count", "1", "--no-progress"]
    argv += ["--device", "cpu", "--hidden-dim", "16", "--wordvec-dim", "8"]
    with file_size_limit(1000):  # the run's config.json is larger
        code = main(argv)
    assert code == 2
    line = _one_error_line(capsys)
    assert line == f"rnncap: error: {out / 'config.json'}: cannot write (File too large)"
    assert not out.exists()


def test_features_that_do_not_fit(tmp_path, capsys, monkeypatch):
    import numpy as np
    from PIL import Image

    import rnncap.models.encoders as encoders

    monkeypatch.setattr(encoders, "build_encoder", _tiny_encoder)
    data = tmp_path / "data"
    (data / "Images").mkdir(parents=True)
    lines = ["image,caption"]
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 30, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(data / "Images" / f"img{i}.png")
        lines.append(f"img{i}.png,A picture number {i} .")
    (data / "captions.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "features"
    argv = ["features", "--data", str(data), "--encoder", "tiny", "--out", str(out)]
    argv += ["--workers", "0", "--device", "cpu", "--quiet", "--backend", "torch"]
    with file_size_limit(1000):  # a shard of 3 x 8 x 8 x 8 features is larger
        code = main(argv)
    assert code == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"rnncap: error: {out}") and line.endswith(
        ": cannot write (File too large)"
    )
    _no_hidden_leftovers(out)
