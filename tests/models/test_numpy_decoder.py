"""The NumPy decoder against the torch model with the same weights (float32, ~1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnncap.data.vocab import Vocabulary
from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN, list_cell_types
from rnncap.models.folder import save_model
from rnncap.models.numpy_decoder import NumpyDecoder, expected_shapes, read_numpy_weights
from rnncap.utils.io import InvalidFileError


def torch_model(cell_type: str, deep_output: bool, seed: int = 0) -> CaptioningRNN:
    torch.manual_seed(seed)
    config = CaptionerConfig(
        encoder="none",
        feature_dim=24,
        cell_type=cell_type,
        wordvec_dim=12,
        hidden_dim=16,
        vocab_size=30,
        deep_output=deep_output,
    )
    model = CaptioningRNN(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # every weight away from its initial scale, biases too
            p.add_(0.2 * torch.randn_like(p))
    return model


def as_numpy(model: CaptioningRNN) -> NumpyDecoder:
    return NumpyDecoder(model.config, {k: v.numpy() for k, v in model.state_dict().items()})


@pytest.mark.parametrize("cell_type", list_cell_types())
@pytest.mark.parametrize("deep_output", [False, True])
def test_steps_match_the_torch_model(cell_type, deep_output):
    model = torch_model(cell_type, deep_output)
    decoder = as_numpy(model)
    g = torch.Generator().manual_seed(1)
    shape = (3, 24, 3, 2) if cell_type == "attn" else (3, 24)
    feats = torch.randn(shape, generator=g)
    with torch.no_grad():
        state = model.init_state(feats)
        np_state = decoder.init_state(feats.numpy())
        for s, n in zip(state, np_state, strict=True):
            np.testing.assert_allclose(n, s.numpy(), rtol=1e-5, atol=1e-5)
        tokens = torch.tensor([1, 1, 1])
        for t in range(5):  # a few steps with varied words, rows in a shuffled order
            log_probs, state, weights = model.step(tokens, state)
            np_log_probs, np_state, np_weights = decoder.step(tokens.numpy(), np_state)
            np.testing.assert_allclose(np_log_probs, log_probs.numpy(), rtol=1e-5, atol=1e-5)
            if cell_type == "attn":
                np.testing.assert_allclose(np_weights, weights.numpy(), rtol=1e-5, atol=1e-6)
            else:
                assert np_weights is None and weights is None
            tokens = torch.tensor([4 + t, 7, 20 - t])
            order = [2, 0, 1]
            state = tuple(s if i in model.static_state else s[order] for i, s in enumerate(state))
            np_state = tuple(
                s if i in decoder.static_state else s[order] for i, s in enumerate(np_state)
            )


@pytest.mark.parametrize("cell_type", list_cell_types())
@pytest.mark.parametrize("deep_output", [False, True])
def test_expected_shapes_are_the_state_dicts(cell_type, deep_output):
    model = torch_model(cell_type, deep_output)
    state = model.state_dict()
    assert expected_shapes(model.config) == {k: tuple(v.shape) for k, v in state.items()}


def test_reads_a_saved_folder_in_float16(tmp_path):
    model = torch_model("attn", False)
    vocab = Vocabulary([f"w{i}" for i in range(26)])
    model = CaptioningRNN(CaptionerConfig(**{**model.config.to_dict(), "vocab_size": len(vocab)}))
    save_model(tmp_path / "m", model, vocab, weights="float16")
    weights = read_numpy_weights(tmp_path / "m", model.config)
    half = {k: v.half().float().numpy() for k, v in model.state_dict().items()}
    assert weights.keys() == half.keys()
    for k in weights:
        assert weights[k].dtype == np.float32
        np.testing.assert_array_equal(weights[k], half[k])
    other = CaptionerConfig(**{**model.config.to_dict(), "hidden_dim": 8})
    with pytest.raises(InvalidFileError, match="shape"):
        read_numpy_weights(tmp_path / "m", other)
