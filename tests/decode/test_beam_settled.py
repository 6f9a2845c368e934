"""Beam search stops stepping hypotheses that can no longer matter, and returns what a plain
beam search returns: compared with a reference written one hypothesis at a time."""

from __future__ import annotations

import pytest
import torch

import rnncap.decode.beam as beam_module
from rnncap.decode.beam import beam_search
from rnncap.models.captioning_rnn import CaptioningRNN
from support.decoding import BACKENDS, on_backend, random_features, tiny_decoder

WORDS = 5  # ordinary words: ids 4..8 after <pad>, <start>, <end>, <unk>
END = 2


def tiny_model(cell_type: str, seed: int) -> CaptioningRNN:
    model = tiny_decoder(cell_type, seed, WORDS, max_length=8)
    with torch.no_grad():
        model.vocab_proj.weight.mul_(2.0)
        model.vocab_proj.bias[END] += 0.25  # captions of every length, some short
    return model


class CountingModel:
    """The model, counting the hypotheses it is stepped on."""

    def __init__(self, model):
        self.model, self.config, self.rows, self.steps = model, model.config, 0, 0
        self.static_state = model.static_state

    def init_state(self, feats):
        return self.model.init_state(feats)

    def step(self, tokens, state):
        self.rows += len(tokens)
        self.steps += 1
        return self.model.step(tokens, state)


@torch.no_grad()
def reference_beam(model, feature, K: int, max_length: int, bonus=None):
    """Textbook beam search for one image, one hypothesis at a time: every unfinished
    hypothesis is extended by every word, a finished one carries over with its score, the K
    best are kept; returns (words, score, hypotheses stepped)."""
    cfg = model.config
    beams = [(0.0, (), False, model.init_state(feature[None]))]
    stepped = 0
    for _ in range(max_length):
        candidates = []
        for score, words, done, state in beams:
            if done:
                candidates.append((score, words, True, state))
                continue
            token = torch.tensor([words[-1] if words else cfg.start_id])
            log_probs, new_state, _ = model.step(token, state)
            stepped += 1
            for w in (END, *range(4, cfg.vocab_size)):
                gain = float(log_probs[0, w])
                if bonus is not None and w not in words:
                    gain += float(bonus[w])
                candidates.append((score + gain, (*words, w), w == END, new_state))
        beams = sorted(candidates, key=lambda c: -c[0])[:K]
        if all(done for _, _, done, _ in beams):
            break
    score, words, _, _ = max(beams, key=lambda c: c[0])
    return tuple(w for w in words if w != END), score, stepped


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "attn"])
@pytest.mark.parametrize("beam", [2, 4])
@pytest.mark.parametrize("with_bonus", [False, True])
def test_narrow_beam_equals_reference_and_steps_fewer_hypotheses(
    cell_type, beam, with_bonus, backend
):
    searched = stepped = 0
    for seed in range(4):  # tiny models: some end at once, some run to max_length, some between
        model = tiny_model(cell_type, seed)
        feats = random_features(cell_type, 6, seed)
        bonus = None
        if with_bonus:  # a per-image prior for 0, 1 or 2 words, each paid once per caption
            bonus = torch.zeros(6, 4 + WORDS, dtype=torch.float64)
            for i in range(6):
                for j in range(i % 3):
                    bonus[i, 4 + (i + 2 * j) % WORDS] = 1.5 - 0.5 * j
        decoder, inputs = on_backend(model, feats, backend)
        counting = CountingModel(decoder)
        given = bonus if bonus is None or backend == "torch" else bonus.numpy()
        out = beam_search(counting, inputs, beam_size=beam, max_length=8, word_bonus=given)
        searched += counting.rows
        for i in range(6):
            words, score, n = reference_beam(
                model, feats[i], beam, 8, None if bonus is None else bonus[i]
            )
            stepped += n
            assert tuple(out.tokens[i]) == words
            assert out.scores[i] == pytest.approx(score, abs=1e-9)
    # The textbook search steps every unfinished hypothesis until the last one ends; this one
    # stops stepping an image once its answer is settled, so it does less model work.
    assert searched < stepped


def test_length_penalty_keeps_stepping_until_every_hypothesis_ends():
    # Ranked by score / length**a, a longer caption can still overtake: nothing is settled early.
    model = tiny_model("lstm", seed=5)
    feats = random_features("lstm", 6, seed=5)
    counting = CountingModel(model)
    out = beam_search(counting, feats, beam_size=3, max_length=8, length_penalty=1.0)
    plain = CountingModel(model)
    beam_search(plain, feats, beam_size=3, max_length=8)
    assert counting.rows > plain.rows
    assert len(out.tokens) == 6


@pytest.mark.parametrize("cell_type", ["rnn", "attn"])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_stepping_every_row_as_on_a_gpu_gives_the_same_result(
    monkeypatch, cell_type, length_penalty
):
    # On a GPU every hypothesis is stepped, finished and impossible ones too, and the search
    # must discard what the model says for them: the same captions, scores and attention.
    model = tiny_model(cell_type, seed=7)
    feats = random_features(cell_type, 6, seed=7)
    bonus = torch.zeros(6, 4 + WORDS, dtype=torch.float64)
    bonus[:, 5] = 1.0
    kwargs = dict(
        beam_size=3,
        max_length=8,
        length_penalty=length_penalty,
        word_bonus=bonus,
        no_repeat_ngram=2,
    )
    live = beam_search(model, feats, **kwargs)
    monkeypatch.setattr(beam_module, "_rows_to_step", lambda finished, scores: None)
    counting = CountingModel(model)
    every = beam_search(counting, feats, **kwargs)
    assert counting.rows == 6 * 3 * counting.steps  # really every row, at every step
    assert every.tokens == live.tokens
    assert every.scores == pytest.approx(live.scores, abs=1e-12)
    if cell_type == "attn":
        for a, b in zip(every.attention, live.attention, strict=True):
            torch.testing.assert_close(a, b)
