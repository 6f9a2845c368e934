"""A data split in memory for training: cached encoder features and encoded captions per image,
and the batches drawn from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnncap.data.vocab import Vocabulary
from rnncap.engine.train_config import TrainConfig


@dataclass
class CaptionSplit:
    """One split in memory: encoder features per image and encoded captions per image."""

    names: list[str]
    features: torch.Tensor  # (I, C, h, w) or (I, C), float16
    captions: list[list[list[int]]]  # per image, its captions as token ids with <start>/<end>
    references: list[list[str]]  # per image, the raw reference captions
    mirrored: torch.Tensor | None = None  # (I, C, h, w): features of the mirror images, if loaded


def load_split(
    cfg: TrainConfig, split: str, vocab: Vocabulary | None, mirrored: bool = False
) -> tuple[CaptionSplit, Vocabulary]:
    """Read the split's captions and its cached features (and those of the mirror images, with
    `mirrored`); builds the vocabulary from train."""
    from rnncap.data.datasets import load_dataset
    from rnncap.data.features import FeatureCache, cache_name

    dataset = load_dataset(cfg.data, cfg.format, split)
    samples = list(dataset)
    if cfg.limit_images:
        samples = samples[: cfg.limit_images]
    if vocab is None:
        vocab = Vocabulary.build((c for s in samples for c in s.captions), cfg.min_count)
    features, names = FeatureCache(cfg.features, cfg.encoder).load_split(samples)
    captions = [
        [_truncate(vocab.encode(c), cfg.max_caption_words) for c in s.captions] for s in samples
    ]
    flipped = None
    if mirrored:
        flipped, _ = FeatureCache(cfg.features, cache_name(cfg.encoder, True)).load_split(samples)
    references = [s.captions for s in samples]
    return CaptionSplit(names, features, captions, references, flipped), vocab


def _truncate(ids: list[int], max_words: int) -> list[int]:
    return ids if len(ids) <= max_words + 2 else ids[: max_words + 1] + [ids[-1]]


def collate(
    split: CaptionSplit,
    index: list[int],
    pad_id: int,
    mirror: torch.Tensor | None = None,
    swap: torch.Tensor | None = None,
):
    """Images `index` -> features (B, ...), captions (sum n_i, T+1) padded, counts (B,).

    mirror (B,) bool: these images are shown mirrored, with the features of their mirror image
    (`split.mirrored`) and their captions' token ids mapped through `swap` (V,) (left <-> right).
    """
    rows = [c for i in index for c in split.captions[i]]
    counts = torch.tensor([len(split.captions[i]) for i in index])
    T = max(len(r) for r in rows)
    captions = torch.full((len(rows), T), pad_id, dtype=torch.long)
    for j, r in enumerate(rows):
        captions[j, : len(r)] = torch.tensor(r)
    features = batch_features(split, index, mirror)
    if mirror is not None and bool(mirror.any()):
        flipped_rows = mirror.repeat_interleave(counts)  # (sum n_i,)
        captions[flipped_rows] = swap[captions[flipped_rows]]
    return features, captions, counts


def batch_features(
    split: CaptionSplit, index: list[int], mirror: torch.Tensor | None = None
) -> torch.Tensor:
    """Features (B, ...) of images `index`: those of the mirror image where `mirror` (B,) is set."""
    features = split.features[index]  # a copy: the split is not changed
    if mirror is not None and bool(mirror.any()):
        features[mirror] = split.mirrored[torch.tensor(index)[mirror]]
    return features


def mirror_masks(batches: list[torch.Tensor], rate: float, seed: int, epoch: int) -> list:
    """Per global batch of an epoch, which of its images are shown mirrored: (B,) bool each,
    drawn from (seed, epoch) alone, so every process and a resumed run draw the same."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch + 500)
    return [torch.rand(len(batch), generator=generator) < rate for batch in batches]


MIRROR_WORDS = {"left": "right", "right": "left"}  # what a mirror image's captions swap


def left_right_swap(vocab: Vocabulary) -> torch.Tensor:
    """Token ids (V,) mapping each word to itself, except MIRROR_WORDS to each other (a mirror
    image's captions); the identity when the vocabulary lacks either."""
    swap = torch.arange(len(vocab))
    ids = {word: vocab.stoi.get(word) for word in MIRROR_WORDS}
    if None not in ids.values():
        for word, other in MIRROR_WORDS.items():
            swap[ids[word]] = ids[other]
    return swap


def head(split: CaptionSplit, n: int) -> CaptionSplit:
    """The first n images of a split (dry runs)."""
    mirrored = split.mirrored[:n] if split.mirrored is not None else None
    return CaptionSplit(
        split.names[:n], split.features[:n], split.captions[:n], split.references[:n], mirrored
    )
