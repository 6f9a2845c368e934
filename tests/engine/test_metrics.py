"""COCO caption metrics: BLEU against a hand computation, sanity of identical captions, errors."""

import math
import os
from pathlib import Path

import pytest

from rnncap.engine import metrics
from rnncap.engine.metrics import MetricsError, score

pytestmark = pytest.mark.skipif(
    __import__("shutil").which("java") is None, reason="pycocoevalcap needs Java"
)


def _children_cmdlines() -> list[str]:
    """Command lines of this process's live child processes (Linux /proc)."""
    lines = []
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
            except OSError:
                pass
    return lines


def test_bleu_matches_hand_computation():
    references = {
        "img1": ["a dog runs on the grass", "the dog is running"],
        "img2": ["a black dog runs on the beach", "a dog is running"],
    }
    predictions = {"img1": "a dog runs fast", "img2": "dog runs"}
    # Unigrams: img1 matches a, dog, runs (3 of 4); img2 matches dog, runs (2 of 2) -> p1 = 5/6.
    # Bigrams: img1 "a dog", "dog runs" of 3; img2 "dog runs" of 1 -> p2 = 3/4.
    # Closest reference lengths: img1 4 (hyp 4), img2 4 (|4-2| < |7-2|) -> r = 8, c = 6.
    brevity = math.exp(1 - 8 / 6)
    got = score(references, predictions, metrics=["BLEU"])
    assert set(got) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"}
    assert got["BLEU-1"] == pytest.approx(brevity * 5 / 6, rel=1e-6)
    assert got["BLEU-2"] == pytest.approx(brevity * math.sqrt(5 / 6 * 3 / 4), rel=1e-6)


def test_bleu_clips_repeated_words_and_tokenizer_drops_case_and_punctuation():
    references = {1: ["The cat sat ."]}
    predictions = {1: "the THE the, cat"}  # 4 tokens; "the" clipped to 1 match -> p1 = 2/4
    got = score(references, predictions, metrics=["BLEU"])
    assert got["BLEU-1"] == pytest.approx(2 / 4, rel=1e-6)  # c = 4 > r = 3: no brevity penalty


@pytest.mark.slow  # METEOR loads its paraphrase table in Java: 10-30 s
def test_identical_predictions_score_perfectly_and_meteor_java_is_closed():
    references = {
        "a": ["A man rides a brown horse on the beach .", "someone on a horse"],
        "b": ["Two dogs play in the snow together", "dogs in snow"],
        "c": ["A child eats a red apple in the kitchen", "a kid eating"],
    }
    predictions = {
        "a": "a man rides a brown horse on the beach",
        "b": "two dogs play in the snow together",
        "c": "A child eats a red apple in the kitchen.",
    }
    got = score(references, predictions)
    assert list(got) == list(metrics.METRICS)
    assert got["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert got["ROUGE_L"] > 0.6 and got["METEOR"] > 0.5 and got["CIDEr"] > 1.0
    wrong = {"a": "two dogs", "b": "a red apple", "c": "a horse"}
    assert score(references, wrong, metrics=["CIDEr"])["CIDEr"] < got["CIDEr"] / 5
    assert not [c for c in _children_cmdlines() if "meteor" in c.lower()]


def test_empty_prediction_does_not_shift_the_others():
    references = {"x": ["a red car on the road"], "y": ["a blue boat on the lake"]}
    got = score(references, {"x": "", "y": "a blue boat on the lake"}, metrics=["BLEU", "CIDEr"])
    assert got["BLEU-1"] == pytest.approx(6 / 6 * math.exp(1 - 12 / 6), rel=1e-6)


def test_errors(monkeypatch):
    with pytest.raises(MetricsError, match="1 images lack a prediction"):
        score({"a": ["x"], "b": ["y"]}, {"a": "x"})
    with pytest.raises(ValueError, match="unknown metrics"):
        score({"a": ["x"]}, {"a": "x"}, metrics=["SPICE"])
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    with pytest.raises(MetricsError, match="java not found"):
        score({"a": ["x"]}, {"a": "x"})
