"""`--backend` on the inference commands and `rnncap export`: the ONNX Runtime encoder gives the
torch captions and features; an exported model folder carries its encoder.onnx."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from rnncap.cli import main  # noqa: E402
from rnncap.models import onnx_encoder  # noqa: E402
from rnncap.models.encoders import Encoder  # noqa: E402
from support.inference import example_images, shared_encoder  # noqa: E402


@pytest.fixture(autouse=True)
def reuse_encoder(monkeypatch):
    """Every model built in this process shares one pretrained encoder instead of rebuilding it."""
    import rnncap.models.encoders as encoders

    encoder = shared_encoder()
    monkeypatch.setattr(encoders, "build_encoder", lambda *args, **kwargs: encoder)


def caption(capsys, model, *extra: str) -> tuple[int, str, str]:
    paths = [str(p) for p in example_images()[:3]]
    code = main(["caption", *paths, "--model", str(model), "--device", "cpu", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_caption_same_output_with_either_backend(model_dir, capsys):
    code, with_torch, err = caption(capsys, model_dir, "--backend", "torch", "--json")
    assert code == 0, err
    code, with_onnx, err = caption(capsys, model_dir, "--backend", "onnx", "--json")
    assert code == 0, err
    assert len(with_onnx.splitlines()) == 3
    for a, b in zip(with_torch.splitlines(), with_onnx.splitlines(), strict=True):
        a, b = json.loads(a), json.loads(b)
        assert (a["image"], a["caption"]) == (b["image"], b["caption"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_backend_that_cannot_run_is_a_usage_error(model_dir, capsys, monkeypatch):
    monkeypatch.setattr(onnx_encoder, "onnxruntime_available", lambda: False)
    code, out, err = caption(capsys, model_dir, "--backend", "onnx")
    assert code == 2 and out == ""
    assert err.strip() == "rnncap: error: --backend onnx: " + (
        "the onnx backend needs onnxruntime (pip install onnxruntime)"
    )
    code, out, err = caption(capsys, model_dir)  # auto: torch without onnxruntime
    assert code == 0 and len(out.splitlines()) == 3


def test_export_writes_a_checked_model_folder(model_dir, tmp_path, capsys):
    out = tmp_path / "exported"
    images = [str(p) for p in example_images()[:2]]
    assert main(["export", str(model_dir), str(out), "--check-images", *images]) == 0
    report = capsys.readouterr().out
    assert "largest feature difference from torch on 2 images" in report
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "encoder.onnx",
        "model.safetensors",
        "vocab.json",
    ]
    # The folder's own graph is used: nothing is exported into the user cache.
    code, from_folder, err = caption(capsys, out, "--backend", "onnx")
    assert code == 0 and "exporting" not in err, err
    assert from_folder == caption(capsys, model_dir, "--backend", "torch")[1]
    # OUT must be new, empty, or the model folder itself (in place).
    assert main(["export", str(model_dir), str(out)]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    (out / "encoder.onnx").unlink()
    assert main(["export", str(out), str(out)]) == 0
    assert (out / "encoder.onnx").is_file()
    capsys.readouterr()
    recorded = json.loads((out / "config.json").read_text())["encoder_onnx"]["sha256"]
    assert recorded == hashlib.sha256((out / "encoder.onnx").read_bytes()).hexdigest()
    # A graph changed after the export (still a valid protobuf) is refused: one line, exit 2.
    data = bytearray((out / "encoder.onnx").read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 20_000, 100):
        data[i] ^= 0xFF  # inside the weights, far past the graph's header
    (out / "encoder.onnx").write_bytes(bytes(data))
    code, printed, err = caption(capsys, out)
    assert (code, printed) == (2, "")
    assert err == f"rnncap: error: {out / 'encoder.onnx'}: its SHA-256 differs from the one " + (
        "config.json records: the file changed after rnncap export (export it again)\n"
    )


def test_export_refuses_a_graph_that_differs(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(onnx_encoder, "max_feature_difference", lambda *args, **kwargs: 0.5)
    assert main(["export", str(model_dir), str(tmp_path / "out")]) == 2
    assert "differs from torch by 5.0e-01" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _tiny_flickr(root, count: int = 3):
    import numpy as np
    from PIL import Image

    (root / "Images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["image,caption"]
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(
            root / "Images" / f"img{i}.png"
        )
        lines.append(f"img{i}.png,A picture number {i} .")
    (root / "captions.txt").write_text("\n".join(lines) + "\n")


def test_features_with_either_backend_agree(tmp_path, capsys, monkeypatch):
    import rnncap.models.encoders as encoders
    from rnncap.data.features import FeatureCache

    def tiny(*args, **kwargs):
        torch.manual_seed(0)
        trunk = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU6())
        return Encoder("tiny", trunk, 8, True, 32, mean=[0.5] * 3, std=[0.25] * 3)

    monkeypatch.setattr(encoders, "build_encoder", tiny)
    _tiny_flickr(tmp_path / "data")
    features = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / backend
        argv = ["features", "--data", str(tmp_path / "data"), "--encoder", "tiny", "--out"]
        argv += [str(out), "--workers", "0", "--device", "cpu", "--quiet", "--backend", backend]
        assert main(argv) == 0, capsys.readouterr().err
        paths = sorted((tmp_path / "data" / "Images").iterdir())
        features[backend] = FeatureCache(out, "tiny").get(paths).float()
    assert features["onnx"].shape == (3, 8, 8, 8)
    torch.testing.assert_close(features["onnx"], features["torch"], atol=1e-3, rtol=1e-3)
