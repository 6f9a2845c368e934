"""Training on several sources: extra photo data sets with a sampling weight, and caption text
without photos joining the batches."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from rnncap.decode.captioner import load
from rnncap.engine.sources import (
    TextBatches,
    add_text,
    epoch_order,
    parse_sources,
    read_caption_text,
)
from rnncap.engine.splits import load_split
from rnncap.engine.train import train
from rnncap.utils.io import InvalidFileError
from support.tinydata import make_dataset, tiny_train_config

TEXT = ["a giraffe eats leaves", "a giraffe stands near a tree", "two giraffes on the grass"]


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    first = make_dataset(root / "first", n_train=8, n_dev=3, seed=0)
    second = make_dataset(root / "second", n_train=4, n_dev=2, seed=1, cache=first / "cache")
    text = root / "text.jsonl"
    text.write_text("".join(json.dumps({"captions": [c, c + " today"]}) + "\n" for c in TEXT))
    return first, second, text


def test_parse_sources_reads_format_folder_and_weight():
    assert [(s.format, s.path, s.weight) for s in parse_sources("coco:/d/c@2.5, flickr8k:x")] == [
        ("coco", "/d/c", 2.5),
        ("flickr8k", "x", 1.0),
    ]
    for bad, reason in [
        ("coco", "FORMAT:DIR"),
        ("nope:x", "format"),
        ("coco:x@y", "weight"),
        ("coco:x@0", "weight"),
        ("coco:x@inf", "weight"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_sources(bad)


def test_caption_text_jsonl_and_plain_lines(tmp_path):
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"captions": ["a cat", "a black cat"]}\n\n{"captions": ["a cup"]}\n')
    assert read_caption_text(jsonl) == [["a cat", "a black cat"], ["a cup"]]
    plain = tmp_path / "t.txt"
    plain.write_text("a cat\n\na cup of coffee\n")
    assert read_caption_text(plain) == [["a cat"], ["a cup of coffee"]]
    jsonl.write_text('{"captions": ["ok"]}\n{"captions": "not a list"}\n')
    with pytest.raises(InvalidFileError, match="t.jsonl:2"):
        read_caption_text(jsonl)
    with pytest.raises(InvalidFileError, match="no such file"):
        read_caption_text(tmp_path / "missing.jsonl")


def test_epoch_order_draws_each_image_by_its_weight():
    weights = torch.tensor([1.0, 3.0, 0.5, 2.0])
    seen = Counter()
    for seed in range(200):
        order = epoch_order(weights, 4, torch.Generator().manual_seed(seed)).tolist()
        counts = Counter(order)
        assert counts[0] == 1 and counts[1] == 3 and counts[3] == 2 and counts[2] in (0, 1)
        seen[2] += counts[2]
    assert 70 < seen[2] < 130  # image 2 comes in half of the epochs


def test_text_groups_join_a_batch_with_blank_features():
    features = torch.randn(2, 3, 2, 2)
    captions = torch.tensor([[1, 5, 2], [1, 6, 2], [1, 7, 2]])
    counts = torch.tensor([2, 1])
    text = TextBatches([[[1, 8, 9, 10, 2]], [[1, 11, 2], [1, 12, 2]]], ratio=1.0, seed=0)
    text.start_epoch(1)
    groups = text.take(2)
    assert sorted(map(len, groups)) == [1, 2]
    f, c, n = add_text(features, captions, counts, groups, pad_id=0)
    assert f.shape == (4, 3, 2, 2) and torch.equal(f[:2], features) and not f[2:].any()
    assert n.tolist() == [2, 1, *map(len, groups)]
    assert c.shape == (6, 5) and torch.equal(c[:3, :3], captions) and not c[:3, 3:].any()
    rows = [r for g in groups for r in g]
    for j, r in enumerate(rows, 3):
        assert c[j, : len(r)].tolist() == r and not c[j, len(r) :].any()


def test_extra_source_and_text_build_the_split_and_the_vocabulary(two_sets, tmp_path):
    first, second, text = two_sets
    cfg = tiny_train_config(
        first,
        tmp_path / "run",
        extra_data=f"flickr8k:{second}@2",
        text_data=str(text),
        text_ratio=0.5,
    )
    split, vocab = load_split(cfg, "train", None)
    assert len(split.names) == 8 + 4
    assert split.weights.tolist() == [1.0] * 8 + [2.0] * 4
    assert "giraffe" in vocab and "giraffes" in vocab  # words only the text has
    dev, _ = load_split(cfg, "dev", vocab)
    assert len(dev.names) == 3  # dev stays the first data set's


def _text_loss(captioner, text) -> float:
    """Teacher-forced loss of the caption text with the blank ("no image") features."""
    from rnncap.engine.train import batch_loss

    rows = [captioner.vocab.encode(c) for g in read_caption_text(text) for c in g]
    captions = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    for j, r in enumerate(rows):
        captions[j, : len(r)] = torch.tensor(r)
    blank = torch.zeros(len(rows), captioner.config.feature_dim, 2, 2)
    with torch.no_grad():
        return float(batch_loss(captioner.model, blank, captions, torch.ones(len(rows)).long(), 0))


def test_a_model_trained_with_text_batches_loads_captions_and_learned_the_text(two_sets, tmp_path):
    first, second, text = two_sets
    losses = {}
    for ratio in (0.0, 1.0):
        out = tmp_path / f"run{ratio}"
        cfg = tiny_train_config(
            first,
            out,
            extra_data=f"flickr8k:{second}@2",
            text_data=str(text),
            text_ratio=ratio,
            epochs=3,
            lr=3e-2,
            patience=10,
        )
        train(cfg)
        captioner = load(out / "last", device="cpu", backend="torch")
        assert "giraffe" in captioner.vocab
        features = torch.randn(2, captioner.config.feature_dim, 2, 2)
        captions = captioner.caption_features(features)
        assert len(captions) == 2 and all(isinstance(c.text, str) for c in captions)
        losses[ratio] = _text_loss(captioner, text)
    assert losses[1.0] < 0.8 * losses[0.0]  # the text's captions were trained on


def test_self_critical_rewards_use_each_sources_document_frequencies():
    import numpy as np

    from rnncap.engine.cider import CiderD
    from rnncap.engine.scst import mirror_text, split_scorer

    refs_a = [["a dog runs on the left", "a dog is running"], ["a man rides a bike", "a man"]]
    refs_b = [
        ["a cat on a bed", "a cat sleeps"],
        ["a cup of coffee", "coffee in a cup"],
        ["a giraffe eats", "a tall giraffe"],
    ]
    scorer = split_scorer(refs_a + refs_b, [2, 3], reward_end=False, mirrored=True)
    captions = [
        ["a", "dog", "runs"],
        ["a", "cat", "on", "a", "bed"],
        ["a", "cup"],
        ["a", "dog", "on", "the", "right"],
    ]
    rows = np.array([0, 2, 3, 5 + 0])  # image 0, images 0 and 1 of b, image 0 mirrored
    swapped_a = [[mirror_text(c) for c in refs] for refs in refs_a]
    want = [
        CiderD(refs_a).score(np.array([0]), [captions[0]])[0],
        CiderD(refs_b).score(np.array([0]), [captions[1]])[0],
        CiderD(refs_b).score(np.array([1]), [captions[2]])[0],
        CiderD(swapped_a).score(np.array([0]), [captions[3]])[0],
    ]
    assert scorer.score(rows, captions) == pytest.approx(want, abs=1e-12)
    pooled = CiderD(refs_a + refs_b).score(np.array([2]), [captions[1]])[0]
    assert pooled != pytest.approx(want[1])  # pooled document frequencies would differ
