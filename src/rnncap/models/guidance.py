"""Classifier guidance: the encoder's own ImageNet classifier names what is in the photo, and the
caption's beam search gets a bonus for saying it.

A confident class (probability >= threshold) gives each of its caption words (from
assets/imagenet_words.json, e.g. "tabby" -> "cat") a log-probability bonus of weight * p, paid
once per caption, as a per-image prior for `beam_search(word_bonus=...)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS_FILE = Path(__file__).resolve().parents[1] / "assets" / "imagenet_words.json"


def imagenet_words() -> dict[int, list[str]]:
    """ImageNet-1k class index -> the caption words for it."""
    return {int(k): v for k, v in json.loads(WORDS_FILE.read_text(encoding="utf-8")).items()}


class ClassifierGuide:
    """Per-image word bonus (N, V) from encoder features, through the encoder's classifier.

    classify: features (N, ...) -> ImageNet logits (N, 1000); stoi: the captioner's vocabulary
    (word -> id); words that the vocabulary lacks are left out.
    """

    def __init__(self, classify, stoi: dict[str, int], vocab_size: int) -> None:
        self.classify = classify
        table = imagenet_words()
        self.class_to_word = torch.zeros(len(table), vocab_size)  # (1000, V) 0/1
        for index, words in table.items():
            for word in words:
                if word in stoi:
                    self.class_to_word[index, stoi[word]] = 1.0

    @torch.no_grad()
    def bonus(self, features: torch.Tensor, weight: float, threshold: float) -> torch.Tensor:
        """features (N, ...) -> word bonus (N, V): weight * the probability of the most likely
        confident class that names the word (0 where no class reaches `threshold`)."""
        probs = torch.softmax(self.classify(features).float(), dim=-1)  # (N, 1000)
        strength = torch.zeros(len(probs), self.class_to_word.shape[1])  # (N, V)
        for n, c in (probs >= threshold).nonzero().tolist():  # at most 1/threshold per image
            strength[n] = torch.maximum(strength[n], probs[n, c].cpu() * self.class_to_word[c])
        return weight * strength
