"""Classifier guidance: the encoder's own ImageNet classifier names what is in the photo, and the
caption's beam search gets a bonus for saying it, or must say it.

A confident class (probability >= threshold) gives each of its caption words (from
assets/imagenet_words.json, e.g. "tabby" -> "cat") a log-probability bonus of weight * p, paid
once per caption, as a per-image prior for `beam_search(word_bonus=...)`; the words of the
classes above a (higher) threshold are the ones the caption must say for
`beam_search(required=...)` (constrained beam search).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from array_api_compat import array_namespace, is_torch_array

WORDS_FILE = Path(__file__).resolve().parents[1] / "assets" / "imagenet_words.json"


def imagenet_words() -> dict[int, list[str]]:
    """ImageNet-1k class index -> the caption words for it."""
    return {int(k): v for k, v in json.loads(WORDS_FILE.read_text(encoding="utf-8")).items()}


class ClassifierGuide:
    """Per-image word bonus (N, V) from encoder features, through the encoder's classifier.

    classify: features (N, ...) -> ImageNet logits (N, 1000), torch or NumPy; stoi: the
    captioner's vocabulary (word -> id); words that the vocabulary lacks are left out.
    """

    def __init__(self, classify, stoi: dict[str, int], vocab_size: int) -> None:
        self.classify = classify
        table = imagenet_words()
        self.class_to_word = np.zeros((len(table), vocab_size), dtype=np.float32)  # (1000, V)
        for index, words in table.items():
            for word in words:
                if word in stoi:
                    self.class_to_word[index, stoi[word]] = 1.0

    def bonus(self, features, weight: float, threshold: float):
        """features (N, ...) -> word bonus (N, V), an array of the logits' kind (torch or
        NumPy, on the CPU)."""
        logits = self.classify(features)
        return array_namespace(logits).asarray(self.bonus_from_logits(logits, weight, threshold))

    def bonus_from_logits(self, logits, weight: float, threshold: float) -> np.ndarray:
        """ImageNet logits (N, 1000) -> word bonus (N, V) float32: weight * the probability of
        the most likely confident class that names the word (0 where no class reaches
        `threshold`)."""
        probs = _softmax(logits)  # (N, 1000)
        strength = np.zeros((len(probs), self.class_to_word.shape[1]), dtype=np.float32)
        for n, c in zip(*np.nonzero(probs >= threshold), strict=True):  # <= 1/threshold each
            strength[n] = np.maximum(strength[n], probs[n, c] * self.class_to_word[c])
        return weight * strength

    def for_options(self, logits, options) -> tuple[np.ndarray | None, np.ndarray | None]:
        """ImageNet logits (N, 1000) -> the word bonus (N, V) of `options.guidance` and the
        required words (N, V) bool of `options.must_name`, each None when it is 0."""
        bonus, required = None, None
        if options.guidance > 0:
            bonus = self.bonus_from_logits(logits, options.guidance, options.guidance_threshold)
        if options.must_name > 0:
            required = self.required_from_logits(logits, options.must_name)
        return bonus, required

    def required_from_logits(self, logits, threshold: float) -> np.ndarray:
        """ImageNet logits (N, 1000) -> (N, V) bool: the words of every class of probability
        >= `threshold` (none for an image with no such class, or when the vocabulary lacks
        its words)."""
        confident = (_softmax(logits) >= threshold).astype(np.float32)  # (N, 1000)
        return (confident @ self.class_to_word) > 0


def _softmax(logits) -> np.ndarray:
    """Class probabilities as float32 NumPy; torch logits through torch's own softmax."""
    if is_torch_array(logits):
        return logits.detach().float().softmax(dim=-1).cpu().numpy()
    logits = np.asarray(logits, dtype=np.float32)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
