"""Constrained beam search (a required word per image) against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from rnncap.decode.beam import beam_search
from support.decoding import BACKENDS, on_backend, random_features, tiny_decoder

WORDS = 3  # ordinary words: ids 4, 5, 6 after the four specials
END = 2


def skewed_model(cell_type: str, seed: int):
    """A tiny model that rarely says word 6 (its output bias pushed down)."""
    model = tiny_decoder(cell_type, seed, WORDS, max_length=4)
    with torch.no_grad():
        model.vocab_proj.weight.mul_(3.0)
        model.vocab_proj.bias[6] -= 5.0
    return model


@torch.no_grad()
def log_prob(model, feature, words, max_length, bonus=None) -> float:
    """Score of one caption, one word at a time (the independent reference)."""
    state = model.init_state(feature[None])
    token = torch.tensor([model.config.start_id])
    total, said = 0.0, set()
    for w in list(words) + ([END] if len(words) < max_length else []):
        log_probs, state, _ = model.step(token, state)
        total += float(log_probs[0, w])
        if bonus is not None and w not in said:
            total += float(bonus[w])
            said.add(w)
        token = torch.tensor([w])
    return total


def brute_force(model, feature, max_length, required: set[int], bonus=None):
    """The best caption that says a required word; the best of all when none can."""
    every = [
        seq
        for L in range(max_length + 1)
        for seq in itertools.product(range(4, 4 + WORDS), repeat=L)
    ]
    saying = [seq for seq in every if required & set(seq)] or every
    return max(
        ((seq, log_prob(model, feature, seq, max_length, bonus)) for seq in saying),
        key=lambda s: s[1],
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
        best, score = brute_force(model, feats[i], L, required)
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
        every = brute_force_no_repeat(model, feats[i], L, required, bonus[i])
        assert tuple(out.tokens[i]) == every[0]
        assert out.scores[i] == pytest.approx(every[1], abs=1e-9)


def brute_force_no_repeat(model, feature, max_length, required, bonus):
    """Like brute_force, among captions with no word twice (no_repeat_ngram=1)."""
    every = [
        seq
        for L in range(max_length + 1)
        for seq in itertools.product(range(4, 4 + WORDS), repeat=L)
        if len(set(seq)) == len(seq)
    ]
    saying = [seq for seq in every if required & set(seq)] or every
    return max(
        ((seq, log_prob(model, feature, seq, max_length, bonus)) for seq in saying),
        key=lambda s: s[1],
    )


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
