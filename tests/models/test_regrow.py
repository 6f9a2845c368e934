"""A trained model moved onto a grown vocabulary, and `rnncap train --init --grow-vocab`."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from rnncap.data.vocab import Vocabulary
from rnncap.engine.train import train
from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN
from rnncap.models.folder import load_model
from rnncap.models.regrow import grown_vocabulary, with_vocabulary
from rnncap.utils.config import ConfigError
from support.tinydata import make_dataset, tiny_train_config, train_killed_after_first_epoch

OLD = Vocabulary.build(["a dog runs on the grass", "a man rides a bike"])
NEW_WORDS = Vocabulary.build(["a giraffe eats leaves on the grass", "a cat and a dog"])


def test_grown_vocabulary_keeps_every_old_id_and_appends_the_new_words():
    grown = grown_vocabulary(OLD, NEW_WORDS)
    assert grown.itos[: len(OLD)] == OLD.itos
    assert grown.itos[len(OLD) :] == [w for w in NEW_WORDS.itos[4:] if w not in OLD]
    assert {"giraffe", "cat", "leaves"} <= set(grown.itos[len(OLD) :])


@pytest.mark.parametrize(
    "cell_type,deep", [("rnn", False), ("lstm", False), ("attn", False), ("attn", True)]
)
def test_old_words_keep_their_logits_and_new_words_start_below_them(cell_type, deep):
    torch.manual_seed(0)
    config = CaptionerConfig(
        encoder="none",
        feature_dim=6,
        cell_type=cell_type,
        wordvec_dim=5,
        hidden_dim=7,
        vocab_size=len(OLD),
        deep_output=deep,
    )
    model = CaptioningRNN(config).eval()
    with torch.no_grad():
        model.vocab_proj.bias.normal_()
    # new vocabulary in another order than the old: the copy must follow the words, not the ids
    new = Vocabulary(sorted(set(OLD.itos[4:]) | set(NEW_WORDS.itos[4:]), reverse=True))
    grown = with_vocabulary(model, OLD, new).eval()
    features = torch.randn(2, 6, 2, 2) if cell_type == "attn" else torch.randn(2, 6)
    old_ids = torch.tensor([OLD.encode("a dog runs on a bike")[:-1]] * 2)  # (2, T)
    new_ids = torch.tensor([[new.stoi[OLD.itos[i]] for i in row] for row in old_ids.tolist()])
    with torch.no_grad():
        old_logits, _ = model(features, old_ids)  # (2, T, V_old)
        new_logits, _ = grown(features, new_ids)  # (2, T, V_new)
    to_new = torch.tensor([new.stoi[w] for w in OLD.itos])
    torch.testing.assert_close(new_logits[..., to_new], old_logits, rtol=1e-5, atol=1e-6)
    added = torch.tensor([new.stoi[w] for w in new.itos if w not in OLD])
    lowest = model.vocab_proj.bias.min()
    assert torch.all(new_logits[..., added] == lowest)  # zero weights, the rarest word's bias
    # no other weight changed
    for name, value in model.state_dict().items():
        if not name.startswith(("embed.", "vocab_proj.")):
            assert torch.equal(grown.state_dict()[name], value), name


def test_with_vocabulary_refuses_a_vocabulary_that_is_not_the_models():
    config = CaptionerConfig(
        encoder="none",
        feature_dim=6,
        cell_type="lstm",
        wordvec_dim=5,
        hidden_dim=7,
        vocab_size=len(OLD) + 1,
    )
    with pytest.raises(ValueError, match="vocabulary"):
        with_vocabulary(CaptioningRNN(config), OLD, NEW_WORDS)


def test_train_init_grow_vocab_learns_the_text_words_and_keeps_the_old_ids(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "data", n_train=8, n_dev=3)
    first = tmp_path / "first"
    train(tiny_train_config(root, first, epochs=1))
    text = tmp_path / "text.jsonl"
    text.write_text(json.dumps({"captions": ["a giraffe eats leaves", "a giraffe runs"]}) + "\n")
    _, old_vocab = load_model(first / "last")
    assert "giraffe" not in old_vocab
    for grow in (False, True):
        out = tmp_path / f"second{grow}"
        cfg = tiny_train_config(
            root,
            out,
            init=str(first / "last"),
            grow_vocab=grow,
            epochs=2,
            text_data=str(text),
            text_ratio=1.0,
        )
        if grow:  # killed after its first epoch and resumed: the vocabulary it grew is kept
            train_killed_after_first_epoch(cfg, monkeypatch)
            train(replace(cfg, resume=True))
        else:
            train(cfg)
        _, vocab = load_model(out / "last")
        assert vocab.itos[: len(old_vocab)] == old_vocab.itos
        assert ("giraffe" in vocab) is grow
        epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").open()]
        assert epochs == [1, 2]
    with pytest.raises(ConfigError, match="grow_vocab"):
        tiny_train_config(root, tmp_path / "x", grow_vocab=True)
