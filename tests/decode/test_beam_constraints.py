"""Beam search with n-gram blocking and a per-image word bonus, against brute force."""

from __future__ import annotations

import itertools

import pytest
import torch

from rnncap.decode.beam import beam_search, greedy
from rnncap.models.captioning_rnn import CaptioningRNN
from support.decoding import BACKENDS, brute_force, on_backend, random_features, tiny_decoder

WORDS = 3  # ordinary words: ids 4, 5, 6 after the four specials


def repeating_model(cell_type: str, seed: int) -> CaptioningRNN:
    """A tiny model whose best captions repeat a word pair: the bias strongly favours word 4."""
    model = tiny_decoder(cell_type, seed, WORDS, max_length=4)
    with torch.no_grad():
        model.vocab_proj.weight.mul_(3.0)
        model.vocab_proj.bias.normal_(0, 0.5)
        model.vocab_proj.bias[4] += 4.0  # "4 4 4 4" is the unconstrained favourite
    return model


def has_repeat(words: tuple[int, ...], n: int) -> bool:
    grams = [words[i : i + n] for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "attn"])
@pytest.mark.parametrize("n", [1, 2])
def test_exhaustive_blocked_beam_equals_constrained_brute_force(cell_type, n, backend):
    model = repeating_model(cell_type, seed=n)
    feats = random_features(cell_type, 3, seed=n)
    L = 4
    decoder, searched = on_backend(model, feats, backend)
    plain = beam_search(decoder, searched, beam_size=(WORDS + 1) ** (L - 1), max_length=L)
    assert any(has_repeat(tuple(t), n) for t in plain.tokens), "the model must want to repeat"
    out = beam_search(
        decoder, searched, beam_size=(WORDS + 1) ** (L - 1), max_length=L, no_repeat_ngram=n
    )
    for i in range(3):
        best, score = brute_force(model, feats[i], L, lambda s: not has_repeat(s, n))
        assert tuple(out.tokens[i]) == best
        assert out.scores[i] == pytest.approx(score, abs=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "attn"])
def test_blocked_repeat_is_never_emitted(cell_type, backend):
    model, feats = on_backend(
        repeating_model(cell_type, seed=7), random_features(cell_type, 16, seed=7), backend
    )
    for beam in (1, 3):
        out = beam_search(model, feats, beam_size=beam, max_length=12, no_repeat_ngram=2)
        assert not any(has_repeat(tuple(t), 2) for t in out.tokens)
    assert (
        greedy(model, feats, max_length=12, no_repeat_ngram=2).tokens
        == beam_search(model, feats, beam_size=1, max_length=12, no_repeat_ngram=2).tokens
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell_type", ["rnn", "attn"])
def test_word_bonus_equals_brute_force_with_bonus(cell_type, backend):
    model = repeating_model(cell_type, seed=3)
    feats = random_features(cell_type, 3, seed=3)
    L = 3
    bonus = torch.zeros(3, 4 + WORDS, dtype=torch.float64)
    bonus[:, 6] = 6.0  # word 6 is rare without the bonus
    decoder, searched = on_backend(model, feats, backend)
    given = bonus if backend == "torch" else bonus.numpy()
    out = beam_search(
        decoder, searched, beam_size=(WORDS + 1) ** (L - 1), max_length=L, word_bonus=given
    )
    plain = beam_search(decoder, searched, beam_size=(WORDS + 1) ** (L - 1), max_length=L)
    assert sum(t.count(6) for t in out.tokens) > sum(t.count(6) for t in plain.tokens)
    for i in range(3):
        best, score = brute_force(model, feats[i], L, bonus=bonus[i])
        assert tuple(out.tokens[i]) == best
        assert out.scores[i] == pytest.approx(score, abs=1e-9)


def test_bad_arguments():
    model = repeating_model("rnn", 0)
    feats = random_features("rnn", 2, 0)
    with pytest.raises(ValueError, match="no_repeat_ngram"):
        beam_search(model, feats, no_repeat_ngram=-1)
    with pytest.raises(ValueError, match="word_bonus"):
        beam_search(model, feats, word_bonus=torch.zeros(3, 4 + WORDS))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "attn"])
def test_no_end_after_equals_constrained_brute_force(cell_type, backend):
    """No word may end a caption: only the empty caption and captions of max_length remain."""
    from test_decoding import sequence_score, tiny_model

    model, feats, L = tiny_model(cell_type, 1), random_features(cell_type, 6, 1), 3
    never_last = torch.zeros(8, dtype=torch.bool)
    never_last[4:] = True
    decoder, searched = on_backend(model, feats, backend)
    marked = never_last if backend == "torch" else never_last.numpy()
    plain = beam_search(decoder, searched, beam_size=(4 + 1) ** (L - 1), max_length=L)
    out = beam_search(
        decoder, searched, beam_size=(4 + 1) ** (L - 1), max_length=L, no_end_after=marked
    )
    if cell_type == "rnn":  # images 2 and 5 end after one word without the constraint
        assert [len(t) for t in plain.tokens] == [0, 0, 1, 0, 0, 1]
        assert out.tokens != plain.tokens
    for i in range(6):
        words = range(4, 8)
        candidates = [()] + list(itertools.product(words, repeat=L))
        scored = [(c, sequence_score(model, feats[i], c, L)) for c in candidates]
        best, score = max(scored, key=lambda s: s[1])
        assert tuple(out.tokens[i]) == best
        assert out.scores[i] == pytest.approx(score, abs=1e-9)


def test_no_end_after_in_decode_options_round_trips():
    from rnncap.decode.beam import DecodeOptions

    options = DecodeOptions.from_dict({"no_end_after": ["a", "the"]})
    assert options.no_end_after == ("a", "the")
    assert DecodeOptions.from_dict(options.to_dict()) == options
    with pytest.raises(ValueError, match="no_end_after"):
        DecodeOptions(no_end_after=("a", 3))
