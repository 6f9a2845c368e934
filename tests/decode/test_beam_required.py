"""Constrained beam search (a required word per image) against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnncap.decode.beam import beam_search
from support.decoding import BACKENDS, brute_force, on_backend, random_features, tiny_decoder

WORDS = 3  # ordinary words: ids 4, 5, 6 after the four specials


def skewed_model(cell_type: str, seed: int):
    """A tiny model that rarely says word 6 (its output bias pushed down)."""
    model = tiny_decoder(cell_type, seed, WORDS, max_length=4)
    with torch.no_grad():
        model.vocab_proj.weight.mul_(3.0)
        model.vocab_proj.bias[6] -= 5.0
    return model


def saying(required: set[int], no_repeat: bool = False):
    """The captions brute force may pick: those that say a required word (all of them when
    there is none), and with `no_repeat` no word twice."""
    return lambda seq: (
        (not required or bool(required & set(seq))) and (not no_repeat or len(set(seq)) == len(seq))
    )


def mask(rows: list[set[int]]) -> np.ndarray:
    out = np.zeros((len(rows), 4 + WORDS), dtype=bool)
    for n, words in enumerate(rows):
        out[n, sorted(words)] = True
    return out


REQUIRED = [{6}, set(), {5, 6}, {6}]  # an image with none is searched as without the rule


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "attn"])
def test_exhaustive_required_beam_equals_brute_force(cell_type, backend):
    model = skewed_model(cell_type, seed=5)
    feats = random_features(cell_type, len(REQUIRED), seed=5)
    L = 4
    K = (WORDS + 1) ** (L - 1)  # every prefix fits: the search is exhaustive
    decoder, searched = on_backend(model, feats, backend)
    plain = beam_search(decoder, searched, beam_size=K, max_length=L)
    assert not any(6 in t for t in plain.tokens), "the model must not say word 6 by itself"
    out = beam_search(decoder, searched, beam_size=K, max_length=L, required=mask(REQUIRED))
    for i, required in enumerate(REQUIRED):
        best, score = brute_force(model, feats[i], L, saying(required))
        assert tuple(out.tokens[i]) == best
        assert out.scores[i] == pytest.approx(score, abs=1e-9)
    assert out.tokens[1] == plain.tokens[1]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell_type", ["lstm", "attn"])
def test_required_with_bonus_and_blocking_equals_brute_force(cell_type, backend):
    model = skewed_model(cell_type, seed=9)
    feats = random_features(cell_type, len(REQUIRED), seed=9)
    L = 4
    K = (WORDS + 1) ** (L - 1)
    bonus = torch.zeros(len(REQUIRED), 4 + WORDS, dtype=torch.float64)
    bonus[:, 5] = 1.5
    decoder, searched = on_backend(model, feats, backend)
    given = bonus if backend == "torch" else bonus.numpy()
    out = beam_search(
        decoder,
        searched,
        beam_size=K,
        max_length=L,
        word_bonus=given,
        no_repeat_ngram=1,
        required=mask(REQUIRED),
    )
    for i, required in enumerate(REQUIRED):
        best, score = brute_force(model, feats[i], L, saying(required, True), bonus[i])
        assert tuple(out.tokens[i]) == best
        assert out.scores[i] == pytest.approx(score, abs=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("beam", [1, 3])
def test_small_beam_says_the_required_word(backend, beam):
    model = skewed_model("attn", seed=2)
    feats = random_features("attn", 8, seed=2)
    decoder, searched = on_backend(model, feats, backend)
    required = mask([{6}] * 8)
    out = beam_search(decoder, searched, beam_size=beam, max_length=4, required=required)
    assert all(6 in t for t in out.tokens)


def test_required_rows_must_match_images():
    model = skewed_model("rnn", seed=1)
    feats = random_features("rnn", 2, seed=1)
    with pytest.raises(ValueError, match="required has 3 rows for 2 images"):
        beam_search(model, feats, beam_size=2, max_length=3, required=mask([{6}] * 3))
