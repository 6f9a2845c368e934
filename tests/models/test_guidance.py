"""Classifier guidance: the word bonus follows the classifier's confident classes."""

from __future__ import annotations

import pytest
import torch

from rnncap.models.guidance import ClassifierGuide, imagenet_words


def test_table_covers_imagenet_with_everyday_words():
    table = imagenet_words()
    assert sorted(table) == list(range(1000))
    assert all("dog" in table[i] for i in range(151, 269))  # every dog breed
    assert all("cat" in table[i] for i in range(281, 286))  # tabby .. Egyptian cat
    assert "coffee" in table[967] and "cup" in table[968] and "rocket" in table[812]


def test_bonus_from_confident_classes_only():
    stoi = {"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 3, "cat": 4, "dog": 5, "cup": 6}
    logits = torch.full((2, 1000), -10.0)
    logits[0, 285] = 5.0  # image 0: Egyptian cat, confident
    logits[0, 281] = 4.0  # ... and tabby, also a cat
    # image 1: a flat distribution, nothing confident
    guide = ClassifierGuide(lambda features: logits, stoi, vocab_size=7)
    bonus = guide.bonus(torch.zeros(2, 3), weight=2.0, threshold=0.2)
    probs = torch.softmax(logits, dim=-1)
    expected = torch.zeros(2, 7)
    expected[0, 4] = 2.0 * max(probs[0, 285], probs[0, 281])  # the strongest cat class
    assert probs[0, 281] >= 0.2 and probs[1].max() < 0.2
    torch.testing.assert_close(bonus, expected)
    assert guide.bonus(torch.zeros(2, 3), weight=2.0, threshold=0.99).abs().sum() == 0


def test_decode_options_check_guidance():
    from rnncap.decode.beam import DecodeOptions

    with pytest.raises(ValueError, match="guidance: must"):
        DecodeOptions(guidance=-1.0)
    with pytest.raises(ValueError, match="guidance_threshold"):
        DecodeOptions(guidance=1.0, guidance_threshold=0.0)
    with pytest.raises(ValueError, match="no_repeat_ngram"):
        DecodeOptions(no_repeat_ngram=-2)
