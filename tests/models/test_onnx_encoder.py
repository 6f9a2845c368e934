"""The ONNX Runtime encoder against the torch encoder it was exported from: same features (1e-4)
on the sample photos, same interface, same captions through the pipeline; the export cache."""

from __future__ import annotations

import hashlib
import json
import pickle

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from rnncap.data.images import open_image  # noqa: E402
from rnncap.models import onnx_encoder  # noqa: E402
from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN  # noqa: E402
from rnncap.models.encoders import Encoder  # noqa: E402
from rnncap.models.onnx_encoder import (  # noqa: E402
    OnnxEncoder,
    export_encoder,
    onnx_encoder_for,
    resolve_backend,
    use_backend,
)
from support.inference import example_images, shared_encoder, tiny_encoder  # noqa: E402

ATTRIBUTES = ("name", "out_channels", "spatial", "image_size", "mean", "std")


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def lite0_pair(tmp_path_factory):
    torch_encoder = shared_encoder()
    path = export_encoder(torch_encoder, tmp_path_factory.mktemp("onnx") / "encoder.onnx")
    return torch_encoder, OnnxEncoder(path, threads=1)


def test_lite0_features_match_torch_on_photos(lite0_pair):
    torch_encoder, ort_encoder = lite0_pair
    for attribute in ATTRIBUTES:
        assert getattr(ort_encoder, attribute) == getattr(torch_encoder, attribute), attribute
    photos = [open_image(p) for p in example_images()]
    images = torch.stack([torch_encoder.preprocess(p) for p in photos])  # (5, 3, 224, 224)
    assert torch.equal(images, torch.stack([ort_encoder.preprocess(p) for p in photos]))
    with torch.inference_mode():
        expected = torch_encoder(images)
        got = ort_encoder(images)
        one = ort_encoder(images[:1])  # the batch axis is dynamic
    assert got.shape == expected.shape == (len(photos), 1280, 7, 7)
    assert got.dtype == expected.dtype
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(one, expected[:1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("spatial", [True, False])
def test_tiny_encoder_round_trip(tmp_path, spatial):
    torch_encoder = tiny_encoder(spatial)
    ort_encoder = OnnxEncoder(export_encoder(torch_encoder, tmp_path / "tiny.onnx"))
    for attribute in ATTRIBUTES:
        assert getattr(ort_encoder, attribute) == getattr(torch_encoder, attribute), attribute
    images = torch.randn(3, 3, 32, 32)
    expected = torch_encoder(images)
    assert expected.shape == ((3, 16, 4, 4) if spatial else (3, 16))
    torch.testing.assert_close(ort_encoder(images), expected, atol=1e-5, rtol=0)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left nothing behind


def test_cpu_only_eval_only_and_picklable(tmp_path):
    ort_encoder = OnnxEncoder(export_encoder(tiny_encoder(), tmp_path / "tiny.onnx"))
    assert ort_encoder.to("cpu") is ort_encoder
    assert ort_encoder.to(torch.device("cpu")).eval() is ort_encoder
    with pytest.raises(ValueError, match="CPU"):
        ort_encoder.to("cuda")
    images = torch.randn(2, 3, 32, 32)
    copy = pickle.loads(pickle.dumps(ort_encoder))  # DataLoader workers under "spawn"
    torch.testing.assert_close(copy(images), ort_encoder(images), atol=0, rtol=0)


def test_not_an_rnncap_graph(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["features"])], "g", [x], [y]
    )
    onnx.save(helper.make_model(graph), tmp_path / "plain.onnx")
    with pytest.raises(ValueError, match="not an encoder exported by rnncap"):
        OnnxEncoder(tmp_path / "plain.onnx")


def test_user_cache_exports_once(tmp_path, capsys):
    torch_encoder = tiny_encoder()
    first = onnx_encoder_for(torch_encoder)
    assert "exporting encoder tiny to ONNX once" in capsys.readouterr().err
    assert first.path.parent == tmp_path / "cache" / "rnncap" / "encoders"
    second = onnx_encoder_for(torch_encoder)
    assert capsys.readouterr().err == ""
    assert second.path == first.path
    other = onnx_encoder_for(tiny_encoder(seed=1))  # other weights: another file
    assert other.path != first.path


def _record_in_config(folder):
    """config.json recording the digest of the folder's encoder.onnx, as `rnncap export` does."""
    digest = hashlib.sha256((folder / onnx_encoder.ENCODER_FILE).read_bytes()).hexdigest()
    (folder / "config.json").write_text(json.dumps({"encoder_onnx": {"sha256": digest}}))


def test_model_folder_copy_used_only_for_the_same_weights(tmp_path, capsys):
    torch_encoder = tiny_encoder()
    export_encoder(torch_encoder, tmp_path / "model" / onnx_encoder.ENCODER_FILE)
    _record_in_config(tmp_path / "model")
    found = onnx_encoder_for(torch_encoder, tmp_path / "model")
    assert found.path == tmp_path / "model" / onnx_encoder.ENCODER_FILE
    assert capsys.readouterr().err == ""
    found = onnx_encoder_for(tiny_encoder(seed=1), tmp_path / "model")
    assert found.path.parent == tmp_path / "cache" / "rnncap" / "encoders"
    assert "exported from other tiny weights" in capsys.readouterr().err


def _flip_weight_bytes(path, fraction: float = 0.01) -> None:
    """Invert `fraction` of the bytes of the graph's largest weight tensor, in place: the file
    stays a valid protobuf of the same size."""
    import onnx

    tensor = max(onnx.load(path).graph.initializer, key=lambda t: len(t.raw_data))
    data = bytearray(path.read_bytes())
    start = bytes(data).index(tensor.raw_data)
    for i in range(0, len(tensor.raw_data), int(1 / fraction)):
        data[start + i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_a_damaged_cache_file_is_exported_again(capsys, damage):
    torch_encoder = tiny_encoder()
    path = onnx_encoder_for(torch_encoder).path
    capsys.readouterr()
    if damage == "flipped":
        _flip_weight_bytes(path)
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    again = onnx_encoder_for(torch_encoder)
    assert "the cached ONNX file is damaged or incomplete" in capsys.readouterr().err
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(again(images), torch_encoder(images), atol=1e-5, rtol=0)
    onnx_encoder_for(torch_encoder)  # repaired: used as it is
    assert capsys.readouterr().err == ""


def _rewired(path, out_path, change):
    """A copy of an exported graph (metadata kept) whose features go through `change(graph,
    name)`, which adds nodes reading `name` and writing "features"."""
    import onnx

    model = onnx.load(path)
    for node in model.graph.node:
        node.output[:] = ["raw" if o == "features" else o for o in node.output]
    change(model.graph, "raw")
    onnx.save(model, out_path)


def _times_zero(graph, name):
    from onnx import helper

    graph.node.append(helper.make_node("Constant", [], ["zero"], value_float=0.0))
    graph.node.append(helper.make_node("Mul", [name, "zero"], ["features"]))


def _one_channel(graph, name):
    from onnx import helper

    graph.node.append(helper.make_node("ReduceMean", [name], ["features"], axes=[1]))
    graph.output[0].type.tensor_type.shape.dim[1].dim_value = 1


def _ten_terabytes(graph, name):
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2_500_000_000_000, 1])
    graph.node.append(helper.make_node("ConstantOfShape", ["big_shape"], ["big"]))
    graph.node.append(helper.make_node("Constant", [], ["big_shape"], value=shape))
    graph.node.append(helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0))
    graph.node.append(helper.make_node("Add", [name, "total"], ["features"]))


def test_a_foreign_graph_in_the_model_folder_is_refused(tmp_path):
    from rnncap.utils.io import InvalidFileError

    torch_encoder, folder = tiny_encoder(), tmp_path / "model"
    path = export_encoder(torch_encoder, folder / onnx_encoder.ENCODER_FILE)
    _record_in_config(folder)
    good = tmp_path / "good.onnx"
    good.write_bytes(path.read_bytes())
    _rewired(good, path, _times_zero)  # the same metadata, features times 0
    with pytest.raises(InvalidFileError, match="SHA-256 differs from the one config.json"):
        onnx_encoder_for(torch_encoder, folder)
    _record_in_config(folder)  # vouched for: still refused when its output cannot be right
    for change, problem in [(_one_channel, "output has shape"), (_ten_terabytes, "ONNX Runtime")]:
        _rewired(good, path, change)
        _record_in_config(folder)
        with pytest.raises(InvalidFileError, match=problem) as error:
            onnx_encoder_for(torch_encoder, folder)(torch.randn(2, 3, 32, 32))
        assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)
    (folder / "config.json").write_text("{}")
    with pytest.raises(InvalidFileError, match="records no SHA-256"):
        onnx_encoder_for(torch_encoder, folder)


def test_resolve_backend(monkeypatch):
    assert resolve_backend("auto", "cpu") == "onnx"
    assert resolve_backend("auto", "cuda") == "torch"
    assert resolve_backend("torch", "cpu") == "torch"
    assert resolve_backend("onnx", torch.device("cpu")) == "onnx"
    with pytest.raises(ValueError, match="runs on the CPU"):
        resolve_backend("onnx", "cuda:0")
    with pytest.raises(ValueError, match="valid backends: auto, onnx, torch"):
        resolve_backend("tensorrt", "cpu")
    monkeypatch.setattr(onnx_encoder, "onnxruntime_available", lambda: False)
    assert resolve_backend("auto", "cpu") == "torch"
    with pytest.raises(ValueError, match="pip install onnxruntime"):
        resolve_backend("onnx", "cpu")


def tiny_captioner() -> CaptioningRNN:
    torch.manual_seed(0)
    config = CaptionerConfig(
        encoder="tiny",
        feature_dim=16,
        cell_type="attn",
        wordvec_dim=8,
        hidden_dim=16,
        vocab_size=12,
        max_length=5,
    )
    model = CaptioningRNN(config).eval()
    model.set_encoder(tiny_encoder())
    return model


def test_use_backend_swaps_the_encoder_only():
    from rnncap.decode.beam import beam_search

    model = tiny_captioner()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(4, 3, 32, 32)
    expected = beam_search(model, model.encode(images), beam_size=3)
    assert use_backend(model, "torch") == "torch"
    assert isinstance(model.encoder, Encoder)
    assert use_backend(model, "auto") == "onnx"
    assert isinstance(model.encoder, OnnxEncoder)
    assert use_backend(model, "onnx") == "onnx"  # already swapped: nothing to do
    assert model.state_dict().keys() == weights.keys()  # the encoder is no part of it
    got = beam_search(model, model.encode(images), beam_size=3)
    assert got.tokens == expected.tokens
    assert got.scores == pytest.approx(expected.scores, abs=1e-4)
    for a, b in zip(got.attention, expected.attention, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_use_backend_auto_falls_back_to_torch(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(onnx_encoder, "onnx_encoder_for", broken)
    model = tiny_captioner()
    assert use_backend(model, "auto") == "torch"
    assert "ONNX encoder unavailable (exporter exploded); using torch" in capsys.readouterr().err
    assert isinstance(model.encoder, Encoder)
    with pytest.raises(onnx_encoder.BackendError, match="ONNX encoder unavailable .*exploded"):
        use_backend(model, "onnx")


def test_unbuilt_encoder_is_deferred_until_used(monkeypatch):
    import rnncap.models.encoders as encoders

    torch.manual_seed(0)
    config = CaptionerConfig(encoder="tiny", feature_dim=16, hidden_dim=16, vocab_size=12)
    model = CaptioningRNN(config).eval()
    assert use_backend(model, "auto") == "onnx"  # nothing built: a features-only model loads
    assert onnx_encoder.current_backend(model) == "onnx"
    with pytest.raises(ValueError, match="unknown encoder 'tiny'"):
        _ = model.encoder  # the same error as the torch path, when the encoder is first needed
    monkeypatch.setattr(encoders, "build_encoder", lambda name: tiny_encoder())
    assert isinstance(model.encoder, OnnxEncoder) and model.encoder.name == "tiny"
    assert use_backend(model, "torch") == "torch"
    assert isinstance(model.encoder, Encoder)
