"""Mirror augmentation for cross-entropy training (`rnncap train --mirror`): a mirrored image
brings the features of its mirror image and its captions with "left" and "right" swapped."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rnncap.data.features import FeatureCache
from rnncap.data.vocab import Vocabulary
from rnncap.engine.scst import mirror_text, reward_scorer
from rnncap.engine.splits import CaptionSplit, collate, left_right_swap
from rnncap.engine.train import train
from support.tinydata import make_dataset, tiny_train_config, train_killed_after_first_epoch


def test_collate_swaps_features_and_left_right_of_mirrored_images_only():
    vocab = Vocabulary("a man turns left right dog".split())
    texts = [["a man turns left", "a dog turns right"], ["a man turns left"], ["right left dog"]]
    split = CaptionSplit(
        names=["p", "q", "r"],
        features=torch.randn(3, 4, 2, 2),
        captions=[[vocab.encode(t) for t in image] for image in texts],
        references=texts,
        mirrored=torch.randn(3, 4, 2, 2),
    )
    mirror = torch.tensor([True, False, True])  # images 2 and 0, in that order
    features, captions, counts = collate(split, [2, 1, 0], 0, mirror, left_right_swap(vocab))
    assert counts.tolist() == [1, 1, 2]
    torch.testing.assert_close(features[0], split.mirrored[2], rtol=0, atol=0)
    torch.testing.assert_close(features[1], split.features[1], rtol=0, atol=0)
    torch.testing.assert_close(features[2], split.mirrored[0], rtol=0, atol=0)
    mirrored_text = {"left": "right", "right": "left"}
    expected = [
        " ".join(mirrored_text.get(w, w) for w in "right left dog".split()),
        "a man turns left",
        " ".join(mirrored_text.get(w, w) for w in "a man turns left".split()),
        " ".join(mirrored_text.get(w, w) for w in "a dog turns right".split()),
    ]
    assert [vocab.decode(row.tolist()) for row in captions] == expected
    unchanged, _, _ = collate(split, [0], 0)
    torch.testing.assert_close(unchanged[0], split.features[0], rtol=0, atol=0)


def test_swap_is_the_identity_without_both_words():
    vocab = Vocabulary("a left turn".split())
    assert left_right_swap(vocab).tolist() == list(range(len(vocab)))


def _mirror_cache(root, name: str, transform) -> None:
    """A `name` cache under root/cache holding transform(features) of the "fake" cache."""
    original = FeatureCache(root / "cache", "fake")
    keys = list(original.entries)
    features = transform(original.get_keys(keys))
    shutil.rmtree(root / "cache" / name, ignore_errors=True)  # the twin replaces "fake" itself
    FeatureCache(root / "cache", name).add(keys, features)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """The tiny data set with a fake-mirrored cache, and a twin whose plain cache holds those
    mirrored features (what training with --mirror 1 must see)."""
    flip = lambda x: x.flip(-1) * 0.5 + 0.25  # noqa: E731  any fixed change of the features
    plain = make_dataset(tmp_path_factory.mktemp("tiny8k"))
    _mirror_cache(plain, "fake-mirrored", flip)
    twin = make_dataset(tmp_path_factory.mktemp("twin"))
    _mirror_cache(twin, "fake", flip)  # the same images (same keys), new features
    return plain, twin


def _weights(run) -> dict:
    return load_file(str(run / "last" / "model.safetensors"))


def test_mirror_one_trains_on_the_mirrored_features(datasets, tmp_path):
    plain, twin = datasets
    train(tiny_train_config(plain, tmp_path / "mirror", epochs=1, mirror=1.0))
    train(tiny_train_config(twin, tmp_path / "twin", epochs=1))
    train(tiny_train_config(plain, tmp_path / "none", epochs=1))
    a, b, c = (_weights(tmp_path / n) for n in ("mirror", "twin", "none"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_scst_mirror_one_samples_from_the_mirrored_features(datasets, tmp_path):
    """Self-critical training with --mirror 1 equals plain self-critical training on the twin
    (the tiny references hold no "left" or "right", so the mirrored rewards are the same)."""
    plain, twin = datasets
    init = tmp_path / "xe"
    train(tiny_train_config(plain, init, epochs=1))
    scst = dict(objective="scst", init=str(init / "best"), epochs=1, lr=1e-3, reward_end=True)
    train(tiny_train_config(plain, tmp_path / "mirror", mirror=1.0, **scst))
    train(tiny_train_config(twin, tmp_path / "twin", **scst))
    train(tiny_train_config(plain, tmp_path / "none", **scst))
    a, b, c = (_weights(tmp_path / n) for n in ("mirror", "twin", "none"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_mirrored_references_swap_left_and_right_and_keep_other_weights():
    refs = [["A dog turns Left on the grass", "a dog runs right"], ["a man rides a bike"]]
    plain, mirrored = reward_scorer(refs), reward_scorer(refs, mirrored=True)
    assert mirror_text("Left, then right-hand: leftover") == "right, then left-hand: leftover"
    swapped = [["a", "dog", "turns", "right", "on", "the", "grass"]]
    assert mirrored.score(np.array([2]), swapped)[0] == pytest.approx(
        plain.score(np.array([0]), [["a", "dog", "turns", "left", "on", "the", "grass"]])[0]
    )
    bike = [["a", "man", "rides", "a", "bike"]]
    assert mirrored.score(np.array([3]), bike)[0] == pytest.approx(
        plain.score(np.array([1]), bike)[0]
    )


def test_mirror_run_resumes_exactly(datasets, tmp_path, monkeypatch):
    plain, _ = datasets
    train(tiny_train_config(plain, tmp_path / "straight", epochs=2, mirror=0.5))
    killed = tiny_train_config(plain, tmp_path / "killed", epochs=2, mirror=0.5)
    train_killed_after_first_epoch(killed, monkeypatch)
    train(tiny_train_config(plain, tmp_path / "killed", epochs=2, mirror=0.5, resume=True))
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "killed")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_mirror_without_its_cache_or_with_bad_values_fails_clearly(tmp_path, capsys):
    from rnncap.cli import main

    root = make_dataset(tmp_path / "data")
    common = [
        "train",
        "--data",
        str(root),
        "--features",
        str(root / "cache"),
        "--encoder",
        "fake",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    assert main([*common, "--mirror", "0.5"]) != 0
    err = capsys.readouterr().err
    assert "fake-mirrored" in err and "rnncap features --mirrored" in err
    assert main([*common, "--mirror", "1.5"]) == 2
    assert "--mirror: must be between 0 and 1" in capsys.readouterr().err
