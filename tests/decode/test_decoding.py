"""Greedy and beam search against brute force on tiny random captioning models."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rnncap.decode.beam import DecodeOptions, beam_search, decode, greedy
from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN, list_cell_types
from support.decoding import BACKENDS, on_backend, random_features, tiny_decoder

WORDS = 4  # ordinary words; ids 4..7 after the four specials
END = 2


def tiny_model(cell_type: str, seed: int) -> CaptioningRNN:
    model = tiny_decoder(cell_type, seed, WORDS, max_length=3)
    with torch.no_grad():  # sharper distributions make ties impossible and search matter
        model.vocab_proj.weight.mul_(6.0)
        model.vocab_proj.bias.normal_(0, 1.0)
    return model


@torch.no_grad()
def sequence_score(model, feature, words: tuple[int, ...], max_length: int) -> float:
    """Log-probability of a caption computed one sequence at a time (the independent reference)."""
    state = model.init_state(feature[None])
    token = torch.tensor([model.config.start_id])
    total = 0.0
    emitted = list(words) + ([END] if len(words) < max_length else [])
    for w in emitted:
        log_probs, state, _ = model.step(token, state)
        total += float(log_probs[0, w])
        token = torch.tensor([w])
    return total


def brute_force(model, feature, max_length: int) -> tuple[tuple[int, ...], float]:
    words = range(4, 4 + WORDS)
    candidates = [seq for L in range(max_length + 1) for seq in itertools.product(words, repeat=L)]
    scored = [(seq, sequence_score(model, feature, seq, max_length)) for seq in candidates]
    return max(scored, key=lambda s: s[1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell_type", list_cell_types())
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exhaustive_beam_equals_brute_force(cell_type, seed, backend):
    model = tiny_model(cell_type, seed)
    feats = random_features(cell_type, 3, seed)
    L = 3
    # Emittable tokens are the 4 words and <end>: a beam of 5**(L-1) keeps every prefix, so the
    # search is exhaustive and must find the brute-force optimum exactly.
    decoder, searched = on_backend(model, feats, backend)
    out = beam_search(decoder, searched, beam_size=(WORDS + 1) ** (L - 1), max_length=L)
    for n in range(3):
        best_seq, best_score = brute_force(model, feats[n], L)
        assert tuple(out.tokens[n]) == best_seq
        assert out.scores[n] == pytest.approx(best_score, abs=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell_type", list_cell_types())
def test_beam_as_wide_as_vocabulary_length_two_is_exact(cell_type, backend):
    model = tiny_model(cell_type, 5)
    feats = random_features(cell_type, 4, 5)
    out = beam_search(*on_backend(model, feats, backend), beam_size=WORDS + 1, max_length=2)
    for n in range(4):
        best_seq, best_score = brute_force(model, feats[n], 2)
        assert tuple(out.tokens[n]) == best_seq
        assert out.scores[n] == pytest.approx(best_score, abs=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell_type", list_cell_types())
def test_beam_one_is_greedy(cell_type, backend):
    model = tiny_model(cell_type, 3)
    feats = random_features(cell_type, 5, 3)
    g = greedy(*on_backend(model, feats, backend), max_length=6)
    b = beam_search(*on_backend(model, feats, backend), beam_size=1, max_length=6)
    assert g.tokens == b.tokens
    # Greedy by hand: argmax over emittable tokens, one image at a time.
    for n in range(5):
        state = model.init_state(feats[n : n + 1])
        token, seq = torch.tensor([1]), []
        for _ in range(6):
            log_probs, state, _ = model.step(token, state)
            log_probs[0, [0, 1, 3]] = float("-inf")
            w = int(log_probs.argmax())
            if w == END:
                break
            seq.append(w)
            token = torch.tensor([w])
        assert g.tokens[n] == seq


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell_type", list_cell_types())
def test_batch_equals_each_image_alone(cell_type, backend):
    model, feats = on_backend(tiny_model(cell_type, 4), random_features(cell_type, 6, 4), backend)
    batch = beam_search(model, feats, beam_size=3, max_length=5)
    for n in range(6):
        alone = beam_search(model, feats[n : n + 1], beam_size=3, max_length=5)
        assert alone.tokens[0] == batch.tokens[n]
        assert alone.scores[0] == pytest.approx(batch.scores[n], abs=1e-9)
        if cell_type == "attn":
            torch.testing.assert_close(
                torch.as_tensor(alone.attention[0]), torch.as_tensor(batch.attention[n])
            )


def test_attention_weights_per_word():
    model = tiny_model("attn", 7)
    feats = random_features("attn", 2, 7)
    out = beam_search(model, feats, beam_size=2, max_length=4)
    for tokens, weights in zip(out.tokens, out.attention, strict=True):
        assert weights.shape == (len(tokens), 4)
        torch.testing.assert_close(
            weights.sum(1), torch.ones(len(tokens), dtype=weights.dtype), rtol=0, atol=1e-6
        )


class ScriptedModel:
    """A decoder whose next-word probabilities depend only on the last word (ids below).

    From <start>: "A <end>" has probability 0.5 * 0.9 = 0.45 (one word), "B C D <end>" has
    0.4 * 0.95 * 0.95 * 1.0 = 0.361 (three words). The plain sum of log-probabilities prefers
    "A"; per-word (length_penalty 1: -1.019 / 3 = -0.340 against -0.799) prefers "B C D".
    """

    PAD, START, END, UNK, A, B, C, D = range(8)
    NEXT = {  # last word -> {next word: probability}
        START: {A: 0.5, B: 0.4, C: 0.05, D: 0.05},
        A: {END: 0.9, C: 0.05, D: 0.05},
        B: {C: 0.95, D: 0.05},
        C: {D: 0.95, END: 0.05},
        D: {END: 1.0},
    }

    def __init__(self):
        self.config = CaptionerConfig(encoder="none", feature_dim=1, vocab_size=8, max_length=6)
        self.table = torch.full((8, 8), 1e-12, dtype=torch.float64)
        for last, probs in self.NEXT.items():
            for word, p in probs.items():
                self.table[last, word] = p
        self.table = self.table.log()

    def init_state(self, features):
        return (torch.full((features.shape[0],), self.START, dtype=torch.long),)

    def step(self, tokens, state):
        return self.table[tokens].clone(), (tokens,), None


def test_length_penalty_changes_the_chosen_caption():
    model, feats = ScriptedModel(), torch.zeros(2, 1)
    M = ScriptedModel
    plain = beam_search(model, feats, beam_size=2)
    assert plain.tokens == [[M.A], [M.A]]
    assert plain.scores[0] == pytest.approx(math.log(0.45))
    for penalty in (0.5, 1.0):
        long = decode(model, feats, DecodeOptions(beam_size=2, length_penalty=penalty))
        assert long.tokens == [[M.B, M.C, M.D]] * 2, penalty
        assert long.scores[0] == pytest.approx(math.log(0.4 * 0.95 * 0.95) / 3**penalty)
    # Greedy never sees "B C D": the penalty only re-ranks the beams that were kept.
    assert greedy(model, feats).tokens == [[M.A], [M.A]]
    model, feats = tiny_model("lstm", 8), random_features("lstm", 2, 8)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, feats, beam_size=0)
