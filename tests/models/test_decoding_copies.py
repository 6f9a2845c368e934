"""The decoder's copies of its weights: while decoding, `CaptioningRNN.step` looks up each word's
input term x Wx + b in a per-word table instead of multiplying, and multiplies by a contiguous
copy of the transposed vocabulary weight. The results must be those of the plain products, also
after the weights change, and the copies must never reach training or the state dict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnncap.models.captioning_rnn import list_cell_types
from support.decoding import random_features, tiny_decoder


def _reference_step(model, tokens, state):
    """The step with gradients enabled: the input term is computed as x Wx + b, no table."""
    with torch.enable_grad():
        log_probs, new_state, weights = model.step(tokens, state)
    return log_probs.detach(), [s.detach() for s in new_state], weights


def _decoded_once(cell_type: str, seed: int, deep_output: bool = False):
    """A tiny float64 model after one decoding step (no gradients): (model, tokens, state,
    that step's (log_probs, new_state, weights))."""
    model = tiny_decoder(cell_type, seed=seed, words=9, max_length=4, deep_output=deep_output)
    tokens = torch.tensor([4, 12, 7, 4, 1])
    state = model.init_state(random_features(cell_type, 5, seed=seed + 1))
    with torch.no_grad():
        out = model.step(tokens, state)
    return model, tokens, state, out


@pytest.mark.parametrize("cell_type", list_cell_types())
def test_table_rows_are_each_words_input_term(cell_type):
    model, _, _, _ = _decoded_once(cell_type, seed=0)
    table = model._decoding_copies["word_table"][1].numpy()
    E = model.embed.weight.detach().numpy()
    Wx, b = model.cell.Wx.detach().numpy(), model.cell.b.detach().numpy()
    np.testing.assert_allclose(table, E @ Wx + b, rtol=1e-12, atol=1e-12)  # float64 model


def test_vocab_copy_is_the_transposed_weight():
    model, _, _, _ = _decoded_once("attn", seed=1)
    copy = model._decoding_copies["vocab_t"][1]
    assert copy.is_contiguous()
    np.testing.assert_array_equal(copy.numpy(), model.vocab_proj.weight.detach().numpy().T)


@pytest.mark.parametrize(
    ("cell_type", "deep_output"), [(c, False) for c in list_cell_types()] + [("attn", True)]
)
def test_step_with_copies_equals_step_without(cell_type, deep_output):
    model, tokens, state, (log_probs, new_state, _) = _decoded_once(cell_type, 2, deep_output)
    assert set(model._decoding_copies) == {"word_table", "vocab_t"}  # both were used
    ref_log_probs, ref_state, _ = _reference_step(model, tokens, state)
    torch.testing.assert_close(log_probs, ref_log_probs, rtol=1e-12, atol=1e-12)
    for got, want in zip(new_state, ref_state, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "name", ["embed.weight", "cell.Wx", "cell.b", "vocab_proj.weight", "vocab_proj.bias"]
)
def test_copies_follow_weight_changes(name):
    model = tiny_decoder("attn", seed=4, words=9, max_length=4)
    tokens = torch.tensor([4, 5, 6])
    state = model.init_state(random_features("attn", 3, seed=5))
    with torch.no_grad():
        before, _, _ = model.step(tokens, state)
        param = model.get_parameter(name)  # an optimizer step changes the weights in place,
        param.add_(torch.linspace(0, 1, param.numel(), dtype=param.dtype).view_as(param))
        after, _, _ = model.step(tokens, state)
    ref_after, _, _ = _reference_step(model, tokens, state)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, ref_after, rtol=1e-12, atol=1e-12)


def test_teacher_forcing_without_gradients_uses_the_vocab_copy():
    """forward (N, T, ..) in eval mode without gradients (a dev loss) goes through the copy."""
    model = tiny_decoder("attn", seed=8, words=9, max_length=4)
    features = random_features("attn", 3, seed=9)
    captions = torch.tensor([[1, 4, 5, 2], [1, 6, 2, 0], [1, 7, 8, 9]])
    with torch.no_grad():
        logits, _ = model(features, captions)
    assert "vocab_t" in model._decoding_copies
    want, _ = model(features, captions)  # gradients enabled: nn.Linear itself
    torch.testing.assert_close(logits, want.detach(), rtol=1e-12, atol=1e-12)


def test_no_copies_when_training_or_with_gradients():
    model = tiny_decoder("lstm", seed=6, words=9, max_length=4)
    tokens = torch.tensor([4, 5])
    state = model.init_state(random_features("lstm", 2, seed=7))
    log_probs, _, _ = model.step(tokens, state)  # gradients enabled
    assert log_probs.requires_grad and not model._decoding_copies
    model.train()
    with torch.no_grad():
        model.step(tokens, state)
    assert not model._decoding_copies
    model.eval()
    with torch.no_grad():
        model.step(tokens, state)
    assert set(model._decoding_copies) == {"word_table", "vocab_t"}
    assert set(model.state_dict()) == {n for n, _ in model.named_parameters()}
