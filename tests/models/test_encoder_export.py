"""A model folder's encoder.onnx written by `export_into` and by scripts/bundle_model.py: float32,
its SHA-256 recorded in config.json, used afterwards without exporting again."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import rnncap  # noqa: E402
from rnncap.models.encoder_export import export_into  # noqa: E402
from support.inference import (  # noqa: E402
    REPO,
    example_images,
    forbid_encoder_export,
    make_tiny_encoder_model,
    tiny_encoder,
)


@pytest.fixture(autouse=True)
def tiny_encoders(tmp_path, monkeypatch):
    """build_encoder gives the tiny 16-channel encoder; the user cache is the test's own."""
    import rnncap.models.encoders as encoders

    monkeypatch.setattr(encoders, "build_encoder", lambda *args, **kwargs: tiny_encoder())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def digests(folder) -> tuple[str, str]:
    """(the SHA-256 config.json records for encoder.onnx, the file's own)."""
    recorded = json.loads((folder / "config.json").read_text())["encoder_onnx"]["sha256"]
    return recorded, hashlib.sha256((folder / "encoder.onnx").read_bytes()).hexdigest()


def test_export_in_place_and_into_a_copy(tmp_path):
    folder = make_tiny_encoder_model(tmp_path / "m")
    report = export_into(folder)
    graph = folder / "encoder.onnx"
    assert report.path == graph and report.difference <= 1e-4 and report.images == 4
    recorded, found = digests(folder)
    assert recorded == found
    copy = export_into(folder, tmp_path / "copy").path.parent
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in folder.iterdir())
    assert digests(copy)[0] == digests(copy)[1] == found


def _bundle(monkeypatch, *argv: str) -> None:
    """scripts/bundle_model.py run in this process (so build_encoder stays patched)."""
    path = REPO / "scripts" / "bundle_model.py"
    spec = importlib.util.spec_from_file_location("bundle_model", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", ["bundle_model.py", *argv])
    script.main()


def test_bundle_script_writes_float32_feature_layers(tmp_path, monkeypatch, capsys):
    import onnx
    from safetensors.numpy import load_file

    source = make_tiny_encoder_model(tmp_path / "m")
    _bundle(monkeypatch, str(source), str(tmp_path / "bundle"), "--decoding", '{"beam_size": 2}')
    folder = tmp_path / "bundle"
    assert "largest feature difference from torch" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "encoder.onnx",
        "model.safetensors",
        "vocab.json",
    ]
    recorded, found = digests(folder)
    assert recorded == found
    stored = load_file(str(folder / "model.safetensors"))  # int8 blocks of 64, float16 else
    assert stored["cell.Wh"].dtype == np.int8 and stored["cell.Wh.int8_scale"].dtype == np.float16
    assert stored["embed.weight"].dtype == stored["feature_proj.bias"].dtype == np.float16
    weights = onnx.load(folder / "encoder.onnx").graph.initializer
    assert {w.data_type for w in weights if len(w.dims) > 1} == {onnx.TensorProto.FLOAT}
    forbid_encoder_export(monkeypatch)
    captioner = rnncap.load(folder, backend="runtime")
    assert captioner.options.beam_size == 2 and captioner(example_images()[0]).text
    _bundle(monkeypatch, str(source), str(tmp_path / "plain"), "--no-encoder")
    assert not (tmp_path / "plain" / "encoder.onnx").exists()
    assert "encoder_onnx" not in json.loads((tmp_path / "plain" / "config.json").read_text())


def test_classifier_weights_stored_in_float16(tmp_path):
    """The classifier's matrix in float16 and cast back: the features are those of the float32
    graph, the class logits those of torch with the matrix rounded to float16 by hand."""
    import onnx
    import torch

    from rnncap.models.onnx_encoder import CLASSIFIER_WEIGHT, export_encoder
    from rnncap.models.onnx_graph import GraphEncoder

    encoder = tiny_encoder()
    encoder.classifier = torch.nn.Linear(16, 1000)
    full = GraphEncoder(export_encoder(encoder, tmp_path / "full.onnx"), threads=1)
    path = export_encoder(encoder, tmp_path / "half.onnx", classifier_float16=True)
    half = GraphEncoder(path, threads=1)
    stored = {w.name: w.data_type for w in onnx.load(path).graph.initializer}
    assert stored[CLASSIFIER_WEIGHT + "_fp16"] == onnx.TensorProto.FLOAT16
    assert CLASSIFIER_WEIGHT not in stored
    pixels = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    features, logits = half.run_with_classes(pixels)
    np.testing.assert_array_equal(features, full.run_with_classes(pixels)[0])
    rounded = torch.nn.Linear(16, 1000)
    with torch.no_grad():
        rounded.weight.copy_(encoder.classifier.weight.half().float())
        rounded.bias.copy_(encoder.classifier.bias)
        pooled = torch.from_numpy(features).mean(dim=(2, 3))  # (N, C)
        expected = rounded(pooled).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(logits - full.run_with_classes(pixels)[1]).max() > 0  # the rounding is there


def test_bundle_script_stores_the_classifier_in_float16_unless_asked(tmp_path, monkeypatch):
    import onnx
    import torch

    import rnncap.models.encoders as encoders
    from rnncap.models.onnx_encoder import CLASSIFIER_WEIGHT

    def with_classifier(*args, **kwargs):
        torch.manual_seed(0)
        encoder = tiny_encoder()
        encoder.classifier = torch.nn.Linear(16, 1000)
        return encoder

    monkeypatch.setattr(encoders, "build_encoder", with_classifier)
    source = make_tiny_encoder_model(tmp_path / "m")
    stored = {}
    for name, flags in (("half", []), ("full", ["--classifier-float32"])):
        _bundle(monkeypatch, str(source), str(tmp_path / name), *flags)
        graph = onnx.load(tmp_path / name / "encoder.onnx").graph
        stored[name] = {w.name: w.data_type for w in graph.initializer}
    assert stored["half"][CLASSIFIER_WEIGHT + "_fp16"] == onnx.TensorProto.FLOAT16
    assert CLASSIFIER_WEIGHT not in stored["half"]
    assert stored["full"][CLASSIFIER_WEIGHT] == onnx.TensorProto.FLOAT
    assert CLASSIFIER_WEIGHT + "_fp16" not in stored["full"]
