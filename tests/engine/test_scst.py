"""Self-critical sequence training: sampling, sequence log-probabilities, the baseline update,
and a killed-and-resumed scst run, on tiny models and the tiny synthetic data set."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_cider import brute_force_cider_d

from rnncap.decode.sample import sample_captions
from rnncap.engine.ptb_tokenize import ptb_tokenize
from rnncap.engine.scst import (
    END_WORD,
    caption_words,
    end_closed,
    reward_scorer,
    self_critical_loss,
    sequence_log_probs,
)
from rnncap.engine.train import train
from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN
from support.tinydata import make_dataset, tiny_train_config, train_killed_after_first_epoch

NEVER = (0, 1, 3)  # padding, <start>, <unk>: never sampled


def tiny(cell_type: str = "attn", seed: int = 0) -> CaptioningRNN:
    torch.manual_seed(seed)
    cfg = CaptionerConfig(
        encoder="none",
        feature_dim=6,
        cell_type=cell_type,
        wordvec_dim=5,
        hidden_dim=7,
        vocab_size=9,
        max_length=5,
    )
    return CaptioningRNN(cfg).double().eval()


def features(cell_type: str, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (n, 6, 2, 2) if cell_type == "attn" else (n, 6)
    return torch.randn(shape, generator=g, dtype=torch.float64)


@torch.no_grad()
def stepwise_log_prob(model, feature, row: list[int]) -> float:
    """One caption's log-probability, word by word through `step` (the independent reference)."""
    state = model.init_state(feature[None])
    token, total = torch.tensor([model.config.start_id]), 0.0
    for w in row:
        if w == model.config.pad_id:
            break
        log_probs, state, _ = model.step(token, state)
        log_probs[0, list(NEVER)] = float("-inf")
        total += float(torch.log_softmax(log_probs[0], 0)[w])
        token = torch.tensor([w])
    return total


@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "attn"])
def test_sequence_log_probs_match_stepwise_reference(cell_type):
    model = tiny(cell_type)
    feats = features(cell_type, 3)
    samples = sample_captions(model, feats, 4, generator=torch.Generator().manual_seed(1))
    assert samples.shape[0] == 12 and samples.shape[1] <= 5
    assert not any(int(t) in NEVER[1:] for t in samples.flatten())
    got = sequence_log_probs(model, model.config, feats, samples, 4)
    for i in range(12):
        expected = stepwise_log_prob(model, feats[i // 4], samples[i].tolist())
        assert float(got[i].detach()) == pytest.approx(expected, abs=1e-10)


def test_samples_follow_the_model_and_the_seed():
    model = tiny("lstm")
    feats = features("lstm", 2)
    with torch.no_grad():  # word 5 first, then <end>, almost surely
        model.vocab_proj.weight.zero_()
        model.vocab_proj.bias.fill_(-20.0)
        model.vocab_proj.bias[5] = 20.0
    samples = sample_captions(model, feats, 3, generator=torch.Generator().manual_seed(0))
    assert (samples == 5).all()  # runs to max_length: <end> is never drawn
    model = tiny("attn", 3)
    feats = features("attn", 4)
    a = sample_captions(model, feats, 5, generator=torch.Generator().manual_seed(7))
    b = sample_captions(model, feats, 5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    ends = [row.index(2) if 2 in row else None for row in a.tolist()]
    for row, end in zip(a.tolist(), ends, strict=True):
        if end is not None:  # padding, and only padding, after <end>
            assert all(t == 0 for t in row[end + 1 :])
    words = caption_words(a, [f"w{i}" for i in range(9)], model.config)
    assert [len(w) for w in words] == [e if e is not None else a.shape[1] for e in ends]


def test_end_word_follows_finished_samples_only():
    cfg = tiny().config  # end_id 2, padding 0
    itos = [f"w{i}" for i in range(9)]
    samples = torch.tensor([[4, 5, 2, 0], [4, 5, 6, 7], [2, 0, 0, 0]])  # ended, cut, empty
    assert caption_words(samples, itos, cfg) == [["w4", "w5"], ["w4", "w5", "w6", "w7"], []]
    assert end_closed(caption_words(samples, itos, cfg), samples, cfg.end_id) == [
        ["w4", "w5", END_WORD],
        ["w4", "w5", "w6", "w7"],
        [END_WORD],
    ]


def test_end_aware_reward_is_cider_d_with_an_end_word_on_both_sides():
    references = [
        ["a dog runs on the grass .", "A brown dog is running on grass", "a dog on the grass"],
        ["two people ride bikes", "Two men are riding bicycles .", "people riding on a road"],
    ]
    candidates = [
        ["a", "dog", "runs", "on", "the", "grass", END_WORD],
        ["a", "dog", "runs", "on", "the", END_WORD],  # cut after "the"
        ["two", "men", "riding", "a", END_WORD],
        ["two", "men", "riding", "bicycles", END_WORD],
    ]
    images = [0, 0, 1, 1]
    got = reward_scorer(references, reward_end=True).score(images, candidates)
    closed = [[ptb_tokenize(c) + [END_WORD] for c in refs] for refs in references]
    # document frequencies over the two images' references, as the scorer has them
    want = [
        brute_force_cider_d(closed, [c if j == i else [] for j in range(2)])[i]
        for i, c in zip(images, candidates, strict=True)
    ]
    assert got == pytest.approx(want, abs=1e-12)
    assert got[0] > got[1] and got[3] > got[2]  # an ending the references have pays


def test_baseline_is_the_mean_of_the_other_samples():
    log_probs = torch.zeros(6, requires_grad=True)
    rewards = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    loss, advantage = self_critical_loss(log_probs, rewards, 3)
    torch.testing.assert_close(advantage, torch.tensor([-3.0, -1.5, 4.5, -1.5, -1.5, 3.0]))
    loss.backward()
    torch.testing.assert_close(log_probs.grad, -advantage / 6)
    with pytest.raises(ValueError, match="at least 2"):
        self_critical_loss(log_probs, rewards, 1)


@pytest.mark.parametrize("cell_type", ["rnn", "attn"])
def test_update_raises_above_baseline_sample_and_lowers_below(cell_type):
    model = tiny(cell_type, 5)
    feats = features(cell_type, 1, 5)
    samples = sample_captions(model, feats, 2, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(samples[0], samples[1]), "pick a seed with two different samples"
    before = [stepwise_log_prob(model, feats[0], s.tolist()) for s in samples]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    rewards = torch.tensor([1.0, 0.0])  # sample 0 above the baseline, sample 1 below
    loss, _ = self_critical_loss(
        sequence_log_probs(model, model.config, feats, samples, 2), rewards, 2
    )
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = [stepwise_log_prob(model, feats[0], s.tolist()) for s in samples]
    assert after[0] > before[0]
    assert after[1] < before[1]


# ------------------------------------------------------------------ the scst stage of `train`
@pytest.fixture(scope="module")
def xe_run(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("tiny8k"))
    out = tmp_path_factory.mktemp("xe") / "run"
    train(tiny_train_config(root, out, epochs=3, lr=5e-2))
    return root, out


def scst(root, out, **kw):
    options = dict(
        objective="scst",
        epochs=2,
        lr=1e-2,
        warmup_steps=0,
        min_lr_ratio=1.0,
        weight_decay=0.0,
        samples_per_image=4,
        patience=10,
    )
    options.update(kw, init=str(kw["init"]))
    return tiny_train_config(root, out, **options)


def test_scst_raises_reward_and_resumes_exactly(xe_run, tmp_path, monkeypatch):
    root, xe = xe_run
    straight = tmp_path / "straight"
    train(scst(root, straight, init=xe / "best", epochs=3))
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["train_reward"] > records[0]["train_reward"]
    assert (straight / "curves.png").stat().st_size > 1000

    killed = tmp_path / "killed"
    train_killed_after_first_epoch(scst(root, killed, init=xe / "best", epochs=3), monkeypatch)
    train(scst(root, killed, init=xe / "best", epochs=3, resume=True))
    a, b = (
        load_file(str(straight / "last/model.safetensors")),
        load_file(str(killed / "last/model.safetensors")),
    )
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_scst_init_must_match_the_features(xe_run, tmp_path):
    root, xe = xe_run
    with pytest.raises(ValueError, match="--init"):
        train(scst(root, tmp_path / "r", init=xe / "best", encoder="other"))
