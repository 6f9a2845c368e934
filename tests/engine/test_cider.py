"""CIDEr-D against a plain dict-based implementation and against pycocoevalcap's Cider."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnncap.engine.cider import CiderD, cider_d
from rnncap.engine.ptb_tokenize import ptb_tokenize
from support.cider_reference import brute_force_cider_d


def random_corpus(seed: int, images: int = 40) -> tuple[list[list[list[str]]], list[list[str]]]:
    """Small vocabulary (many shared n-grams), 1-4 references, empty captions, unseen words."""
    rng = random.Random(seed)
    vocab = "a dog cat runs on the grass red ball".split()

    def caption(words: list[str], low: int = 0, high: int = 12) -> list[str]:
        return [rng.choice(words) for _ in range(rng.randint(low, high))]

    refs = [[caption(vocab) for _ in range(rng.randint(1, 4))] for _ in range(images)]
    cands = []
    for image_refs in refs:
        kind = rng.randrange(4)
        if kind == 0:
            cands.append(list(rng.choice(image_refs)))
        elif kind == 1:  # repeated unseen words, so unseen n-grams repeat too
            cands.append(caption([*vocab, "zebra", "kite"], 1, 14))
        else:
            cands.append(caption(vocab))
    return refs, cands


def test_identical_caption_scores_ten_by_hand() -> None:
    # Two images, no shared n-grams: every idf is log 2, every cosine 1, no length penalty.
    refs = [[["a", "b", "c", "d", "e"]], [["f", "g", "h", "i"]]]
    scores = CiderD(refs).score([0, 1], [refs[0][0], refs[1][0]])
    np.testing.assert_allclose(scores, [10.0, 10.0], rtol=1e-12)
    # One image: log(1 image) = 0, so every idf and score is 0.
    assert CiderD([refs[0]]).score([0], [refs[0][0]])[0] == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force(seed: int) -> None:
    refs, cands = random_corpus(seed)
    expected = brute_force_cider_d(refs, cands)
    scores = CiderD(refs).score(np.arange(len(refs)), cands)  # (K,)
    np.testing.assert_allclose(scores, expected, rtol=1e-10, atol=1e-12)
    ids = [f"img{i}" for i in range(len(refs))]
    corpus = cider_d(dict(zip(ids, refs, strict=True)), dict(zip(ids, cands, strict=True)))
    assert corpus == pytest.approx(np.mean(expected), rel=1e-12)


@pytest.mark.parametrize(
    ("refs", "cands"),
    [
        ([[["a"]], [["b"]]], [["a", "b", "c", "d", "e"], []]),  # no reference bigrams at all
        ([[[]], [[]]], [["a"], []]),  # only empty references
        ([[["a", "b"], []], [["b", "a", "b", "a"]]], [["a", "b", "a", "b"], ["x", "x", "x"]]),
    ],
)
def test_degenerate_corpora_match_brute_force(refs: list, cands: list) -> None:
    scores = CiderD(refs).score(np.arange(len(refs)), cands)
    np.testing.assert_allclose(scores, brute_force_cider_d(refs, cands), rtol=1e-10, atol=1e-12)


def test_scorer_is_reusable_across_calls_subsets_and_orders() -> None:
    refs, cands = random_corpus(7)
    scorer = CiderD(refs)
    full = scorer.score(np.arange(len(refs)), cands)
    order = np.random.default_rng(0).permutation(len(refs))[:15]
    again = scorer.score(order, [cands[i] for i in order])
    np.testing.assert_allclose(again, full[order], rtol=1e-12)
    # several candidates per image, as in SCST; the references are not touched by scoring
    many = scorer.score([3, 3, 3, 5], [cands[3], cands[5], [], cands[5]])
    np.testing.assert_allclose(many[[0, 3]], [full[3], full[5]], rtol=1e-12)
    np.testing.assert_allclose(scorer.score(np.arange(len(refs)), cands), full, rtol=0)


def test_empty_candidate_and_empty_batch() -> None:
    refs, _ = random_corpus(1)
    scorer = CiderD(refs)
    assert scorer.score([0, 1], ["", []]).tolist() == [0.0, 0.0]
    assert scorer.score([], []).shape == (0,)


def test_raw_strings_are_ptb_tokenized() -> None:
    refs = [["A dog's ball.", "The dog runs!"], ["Two cats, sleeping.", "Cats sleep"]]
    tokens = [[ptb_tokenize(c) for c in image] for image in refs]
    cands = ["A dog's BALL .", "cats; sleeping"]
    np.testing.assert_allclose(
        CiderD(refs).score([0, 1], cands),
        CiderD(tokens).score([0, 1], [ptb_tokenize(c) for c in cands]),
        rtol=0,
    )


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="same image ids"):
        cider_d({1: ["a"]}, {2: "a"})
    with pytest.raises(ValueError, match="at least one reference"):
        CiderD([["a b"], []])
    scorer = CiderD([["a b"], ["c d"]])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        scorer.score([2], ["a"])
    with pytest.raises(ValueError, match="1 image indices for 2 candidates"):
        scorer.score([0], ["a", "b"])


# --- Flickr8k dev against pycocoevalcap ----------------------------------------------------------


def flickr8k_dev(data: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Raw references of the 1,000 dev images and deterministic, imperfect predictions."""
    names = (data / "Flickr_8k.devImages.txt").read_text().split()
    captions: dict[str, list[str]] = {}
    for line in (data / "captions.txt").read_text(encoding="utf-8").splitlines()[1:]:
        if line.strip():
            name, caption = line.split(",", 1)  # the caption is everything after the first comma
            captions.setdefault(name, []).append(caption)
    refs = {name: captions[name] for name in names}
    predictions = {}
    for i, name in enumerate(names):
        words = refs[name][0].split()
        predictions[name] = [
            " ".join(w for j, w in enumerate(words) if j % 3 != 1),  # words dropped
            " ".join(reversed(words)),  # same words, other order
            refs[names[(i + 1) % len(names)]][1],  # another image's caption
            "" if i % 40 == 3 else refs[name][2],  # a reference itself, sometimes nothing
        ][i % 4]
    return refs, predictions


def test_matches_pycocoevalcap_cider_on_flickr8k_dev(flickr8k_dir: Path) -> None:
    cider_module = pytest.importorskip("pycocoevalcap.cider.cider")
    refs, predictions = flickr8k_dev(flickr8k_dir)
    gts = {k: [" ".join(ptb_tokenize(c)) for c in v] for k, v in refs.items()}
    res = {k: [" ".join(ptb_tokenize(v))] for k, v in predictions.items()}
    expected, per_image = cider_module.Cider().compute_score(gts, res)
    ours = cider_d(gts, {k: v[0] for k, v in res.items()}, tokenize=False)
    assert ours == pytest.approx(expected, abs=1e-4)
    scores = CiderD(list(gts.values()), tokenize=False).score(
        np.arange(len(gts)), [res[k][0] for k in gts]
    )
    np.testing.assert_allclose(scores, per_image, atol=1e-4)


@pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's tokenizer needs Java")
def test_whole_pipeline_matches_java_and_pycocoevalcap(flickr8k_dir: Path) -> None:
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs, predictions = flickr8k_dev(flickr8k_dir)
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tokenizer.tokenize({k: [{"caption": v}] for k, v in predictions.items()})
    expected, _ = Cider().compute_score(gts, res)
    assert cider_d(refs, predictions) == pytest.approx(expected, abs=1e-4)
    assert cider_d(gts, {k: v[0] for k, v in res.items()}, tokenize=False) == pytest.approx(
        expected, abs=1e-4
    )


def test_import_needs_neither_torch_nor_java() -> None:
    code = "import sys, rnncap.engine.cider; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
