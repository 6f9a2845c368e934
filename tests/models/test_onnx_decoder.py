"""The decoder step in ONNX Runtime against the torch step it was exported from: the same
log-probabilities, state and attention (1e-5) for every cell type and batch size, the same beam
search captions, the export cache, and the torch fallback."""

from __future__ import annotations

import pickle

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from rnncap.decode.beam import beam_search  # noqa: E402
from rnncap.decode.captioner import Captioner  # noqa: E402
from rnncap.models import onnx_decoder  # noqa: E402
from rnncap.models.captioner import CaptionerConfig, CaptioningRNN, list_cell_types  # noqa: E402
from rnncap.models.onnx_decoder import OnnxDecoder, export_step, onnx_decoder_for  # noqa: E402


def tiny(cell_type: str, seed: int = 0) -> CaptioningRNN:
    torch.manual_seed(seed)
    cfg = CaptionerConfig(
        encoder="none", feature_dim=12, cell_type=cell_type, wordvec_dim=8, hidden_dim=10,
        vocab_size=15, max_length=7,
    )  # fmt: skip
    model = CaptioningRNN(cfg).eval()
    with torch.no_grad():  # larger weights than the initialisation: peaked, varied captions
        for p in model.parameters():
            p.mul_(3.0)
    return model


def features(cell_type: str, n: int, grid: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(n)
    shape = (n, 12, grid, grid) if cell_type == "attn" else (n, 12)
    return torch.randn(shape, generator=g)


@pytest.mark.parametrize("cell_type", list_cell_types())
def test_step_matches_torch(tmp_path, cell_type):
    model = tiny(cell_type)
    decoder = OnnxDecoder(model, export_step(model, tmp_path / "step.onnx"), threads=1)
    for n, grid in [(1, 3), (5, 3), (9, 2)]:  # batch and attention grid sizes not seen at export
        state = model.init_state(features(cell_type, n, grid))
        tokens = torch.randint(0, model.config.vocab_size, (n,))
        want_lp, want_state, want_w = model.step(tokens, state)
        got_lp, got_state, got_w = decoder.step(tokens, state)
        torch.testing.assert_close(got_lp, want_lp, rtol=0, atol=1e-5)
        assert len(got_state) == len(want_state)
        for got, want in zip(got_state, want_state, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        if want_w is None:
            assert got_w is None
        else:
            torch.testing.assert_close(got_w, want_w, rtol=0, atol=1e-5)


@pytest.mark.parametrize("cell_type", list_cell_types())
def test_beam_search_gives_the_same_captions(tmp_path, cell_type):
    model = tiny(cell_type, seed=2)
    decoder = OnnxDecoder(model, export_step(model, tmp_path / "step.onnx"), threads=1)
    x = features(cell_type, 12)
    want = beam_search(model, x, beam_size=3, no_repeat_ngram=2)
    got = beam_search(decoder, x, beam_size=3, no_repeat_ngram=2)
    assert got.tokens == want.tokens
    assert len({tuple(t) for t in want.tokens}) > 3  # the check means something: varied captions
    assert got.scores == pytest.approx(want.scores, abs=1e-4)


def test_user_cache_exports_once_per_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = tiny("attn")
    first = onnx_decoder_for(model)
    assert "exporting the decoder step to ONNX once" in capsys.readouterr().err
    assert first.path.parent == tmp_path / "cache" / "rnncap" / "decoders"
    assert onnx_decoder_for(model).path == first.path
    assert capsys.readouterr().err == ""
    assert onnx_decoder_for(tiny("attn", seed=1)).path != first.path  # other weights, other file
    again = pickle.loads(pickle.dumps(first))  # the session is reopened from the file
    state = model.init_state(features("attn", 2))
    tokens = torch.tensor([4, 5])
    torch.testing.assert_close(again.step(tokens, state)[0], first.step(tokens, state)[0])


def test_captioner_steps_in_onnx_runtime_only_with_the_onnx_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = tiny("attn")
    monkeypatch.setattr(Captioner, "backend", property(lambda self: "onnx"))
    assert isinstance(Captioner(model, vocab=None)._decoder(), OnnxDecoder)
    monkeypatch.setattr(Captioner, "backend", property(lambda self: "torch"))
    assert Captioner(model, vocab=None)._decoder() is model


def test_captioner_falls_back_to_the_torch_step(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def broken_export(model, path, opset=0):
        raise RuntimeError("no exporter here")

    monkeypatch.setattr(onnx_decoder, "export_step", broken_export)
    monkeypatch.setattr(Captioner, "backend", property(lambda self: "onnx"))
    model = tiny("lstm")
    assert Captioner(model, vocab=None)._decoder() is model
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("ONNX decoder step unavailable (no exporter here); using torch")
    )


def test_model_folder_copy_used_only_for_the_same_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = tiny("attn")
    export_step(model, tmp_path / "model" / onnx_decoder.STEP_FILE)
    assert onnx_decoder_for(model, tmp_path / "model").path.parent == tmp_path / "model"
    assert capsys.readouterr().err == ""
    other = onnx_decoder_for(tiny("attn", seed=1), tmp_path / "model")
    assert other.path.parent == tmp_path / "cache" / "rnncap" / "decoders"
    assert "was exported from other weights" in capsys.readouterr().err
