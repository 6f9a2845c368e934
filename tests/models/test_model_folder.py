"""Model folders: which folder a model spec resolves to, and a float16 save/load round trip."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors import safe_open

from rnncap.data.vocab import Vocabulary
from rnncap.decode.beam import beam_search
from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN
from rnncap.models.folder import (
    CONFIG,
    DEFAULT_MODEL,
    WEIGHTS,
    load_model,
    resolve_model_dir,
    save_model,
)

CAPTIONS = ["a dog runs on the grass", "a cat sleeps on a red sofa", "two men ride bikes"]


def tiny(cell_type: str = "attn", seed: int = 0) -> tuple[CaptioningRNN, Vocabulary]:
    torch.manual_seed(seed)
    vocab = Vocabulary.build(CAPTIONS, min_count=1)
    config = CaptionerConfig(
        encoder="none",
        feature_dim=8,
        cell_type=cell_type,
        wordvec_dim=6,
        hidden_dim=10,
        vocab_size=len(vocab),
        max_length=6,
    )
    model = CaptioningRNN(config).eval()
    with torch.no_grad():
        model.vocab_proj.weight.mul_(5.0)  # peaky, so rounding could change words if it were off
    return model, vocab


def test_resolve_model_dir_cases(tmp_path):
    model, vocab = tiny()
    assert resolve_model_dir("default") == DEFAULT_MODEL
    folder = save_model(tmp_path / "plain", model, vocab)
    assert resolve_model_dir(folder) == folder
    assert resolve_model_dir(str(folder)) == folder
    assert resolve_model_dir(folder / WEIGHTS) == folder  # the weights file names its folder
    run = tmp_path / "run"
    save_model(run / "last", model, vocab)
    assert resolve_model_dir(run) == run / "last"  # a run without best/ yet
    save_model(run / "best", model, vocab)
    assert resolve_model_dir(run) == run / "best"  # best/ wins over last/
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        resolve_model_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=f"no {CONFIG} \\+ {WEIGHTS} found"):
        resolve_model_dir(tmp_path / "empty")
    half = tmp_path / "half"
    shutil.copytree(folder, half)
    (half / CONFIG).unlink()  # weights without their config are not a model
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model_dir(half)


@pytest.mark.parametrize("cell_type", ["lstm", "attn"])
def test_float16_round_trip(tmp_path, cell_type):
    model, vocab = tiny(cell_type, seed=3)
    folder = save_model(tmp_path / "fp16", model, vocab, weights="float16")
    with safe_open(str(folder / WEIGHTS), "pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
    assert {v.dtype for v in stored.values()} == {torch.float16}
    loaded, loaded_vocab = load_model(folder)
    assert loaded_vocab.itos == vocab.itos and loaded.config == model.config
    # Loaded weights are float32 holding exactly the float16-rounded originals.
    for name, weight in model.state_dict().items():
        restored = loaded.state_dict()[name]
        assert restored.dtype == torch.float32
        torch.testing.assert_close(restored, weight.half().float(), rtol=0, atol=0)
        assert (restored - weight).abs().max() <= weight.abs().max() * 2**-10
    # Captions of the loaded model: those of the original with half-rounded weights, and the
    # same words as the full-precision original on these features.
    rounded, _ = tiny(cell_type, seed=3)
    rounded.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    features = torch.randn(
        (4, 8, 2, 2) if cell_type == "attn" else (4, 8), generator=torch.Generator().manual_seed(0)
    )
    got = beam_search(loaded, features, beam_size=2)
    assert got.tokens == beam_search(rounded, features, beam_size=2).tokens
    assert got.tokens == beam_search(model, features, beam_size=2).tokens


def test_decoding_settings_travel_with_the_model(tmp_path):
    import rnncap

    model, vocab = tiny("attn")
    decoding = {"beam_size": 4, "length_penalty": 0.7, "no_repeat_ngram": 2, "guidance": 1.5}
    save_model(tmp_path / "m", model, vocab, decoding=decoding)
    captioner = rnncap.load(tmp_path / "m", device="cpu")
    held = captioner.options.to_dict()
    assert {k: held[k] for k in decoding} == decoding
    save_model(tmp_path / "plain", model, vocab)
    assert rnncap.load(tmp_path / "plain", device="cpu").options.no_repeat_ngram == 0
