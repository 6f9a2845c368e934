"""Language-model fusion in the one beam search, against scores computed by hand: each model run
on its own over a whole sequence (the language models through their teacher-forced `forward`),
and brute force over every caption of a tiny vocabulary."""

from __future__ import annotations

import itertools

import pytest
import torch

from rnncap.data.vocab import Vocabulary
from rnncap.decode.beam import DecodeOptions, beam_search
from rnncap.decode.captioner import Captioner, CaptionError
from rnncap.models.fusion import FusedDecoder, load_language_models
from rnncap.models.lm import LanguageModel, LMConfig
from rnncap.utils.io import InvalidFileError
from support.decoding import random_features, tiny_decoder

WORDS, L, END, START = 4, 3, 2, 1


def tiny_lm(seed: int, cell: str = "lstm") -> LanguageModel:
    torch.manual_seed(100 + seed)
    lm = LanguageModel(LMConfig(cell=cell, vocab_size=4 + WORDS, embed_dim=3, hidden_dim=5))
    with torch.no_grad():
        lm.head.weight.mul_(4.0)
    return lm.double().eval()


def sharp_decoder(cell_type: str, seed: int):
    model = tiny_decoder(cell_type, seed, WORDS, max_length=L)
    with torch.no_grad():
        model.vocab_proj.weight.mul_(6.0)
        model.vocab_proj.bias.normal_(0, 1.0)
    return model


@torch.no_grad()
def fused_score(model, terms, feature, words: tuple[int, ...]) -> float:
    """sum over the emitted words of log p_cap + sum_i w_i log p_lm_i, each model on its own."""
    emitted = list(words) + ([END] if len(words) < L else [])
    state, token, total = model.init_state(feature[None]), torch.tensor([START]), 0.0
    for w in emitted:
        log_probs, state, _ = model.step(token, state)
        total += float(log_probs[0, w])
        token = torch.tensor([w])
    for lm, weight in terms:
        inputs = torch.tensor([[START, *emitted[:-1]]])
        log_probs = torch.log_softmax(lm(inputs)[0], dim=-1)  # (T, V), teacher-forced
        total += weight * sum(float(log_probs[t, w]) for t, w in enumerate(emitted))
    return total


def brute_force(model, terms, feature):
    words = range(4, 4 + WORDS)
    candidates = [seq for n in range(L + 1) for seq in itertools.product(words, repeat=n)]
    return max(
        ((s, fused_score(model, terms, feature, s)) for s in candidates), key=lambda pair: pair[1]
    )


@pytest.mark.parametrize("cell_type", ["lstm", "attn"])
@pytest.mark.parametrize("weights", [(0.7, 0.0), (0.8, -0.5), (0.0, -1.5)])
def test_exhaustive_fused_beam_equals_brute_force(cell_type, weights):
    model = sharp_decoder(cell_type, seed=3)
    terms = [(tiny_lm(0), weights[0]), (tiny_lm(1, "rnn"), weights[1])]
    terms = [(lm, w) for lm, w in terms if w != 0]
    feats = random_features(cell_type, 3, seed=4)
    out = beam_search(
        FusedDecoder(model, terms), feats, beam_size=(WORDS + 1) ** (L - 1), max_length=L
    )
    for n in range(3):
        best, best_score = brute_force(model, terms, feats[n])
        assert tuple(out.tokens[n]) == best
        assert out.scores[n] == pytest.approx(best_score, abs=1e-9)


@pytest.mark.parametrize("beam", [1, 3])
def test_fused_score_is_the_sum_of_the_models_scores(beam):
    model = sharp_decoder("attn", seed=5)
    with torch.no_grad():  # longer captions, so that the language models have words to judge
        model.vocab_proj.bias[END] -= 4.0
    terms = [(tiny_lm(2), 3.0), (tiny_lm(3), -0.5)]
    feats = random_features("attn", 4, seed=6)
    out = beam_search(FusedDecoder(model, terms), feats, beam_size=beam, max_length=L)
    plain = beam_search(model, feats, beam_size=beam, max_length=L)
    for n in range(4):
        assert out.scores[n] == pytest.approx(
            fused_score(model, terms, feats[n], tuple(out.tokens[n])), abs=1e-9
        )
    assert all(out.tokens)
    assert out.tokens != plain.tokens  # the language models changed some caption


def test_density_ratio_turns_off_the_early_stop():
    assert FusedDecoder(sharp_decoder("lstm", 0), [(tiny_lm(0), 1.0)]).steps_nonpositive
    assert not FusedDecoder(sharp_decoder("lstm", 0), [(tiny_lm(0), -1.0)]).steps_nonpositive


def _vocab() -> Vocabulary:
    return Vocabulary([f"w{i}" for i in range(WORDS)])


def test_captioner_fuses_its_language_models_by_the_options_weights():
    model = sharp_decoder("attn", seed=7).float()  # the Captioner decodes in float32
    lm = tiny_lm(4).float()
    feats = random_features("attn", 3, seed=8).float()
    options = DecodeOptions(beam_size=2, lm_weight=0.9)
    captioner = Captioner(model, _vocab(), options, language_models={"lm": lm})
    got = [c.score for c in captioner.caption_features(feats)]
    want = beam_search(FusedDecoder(model, [(lm, 0.9)]), feats, beam_size=2).scores
    assert got == pytest.approx(want, abs=1e-9)
    with pytest.raises(CaptionError, match="source_lm"):  # a weight without its model
        captioner.caption_features(feats, DecodeOptions(source_lm_weight=1.0))


def test_weights_out_of_range_are_refused():
    with pytest.raises(ValueError, match="lm_weight"):
        DecodeOptions(lm_weight=1e308)
    with pytest.raises(ValueError, match="source_lm_weight"):
        DecodeOptions(source_lm_weight=-1.0)


def test_model_folder_language_models_load_and_must_share_the_vocabulary(tmp_path):
    from rnncap.engine.lm_train import History, LMTrainConfig, save

    lm = tiny_lm(5).float()
    save(lm, _vocab(), LMTrainConfig(model=lm.config), History(), tmp_path / "lm")
    loaded = load_language_models(tmp_path, _vocab(), "cpu")
    assert set(loaded) == {"lm"}
    for key, value in lm.state_dict().items():
        assert torch.equal(loaded["lm"].state_dict()[key], value)
    with pytest.raises(InvalidFileError, match="vocabulary"):
        load_language_models(tmp_path, Vocabulary([f"x{i}" for i in range(WORDS)]), "cpu")
