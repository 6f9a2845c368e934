"""A data split in memory for training: cached encoder features and encoded captions per image,
and the batches drawn from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnncap.data.datasets import DatasetError
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
    weights: torch.Tensor | None = None  # (I,) times each image is drawn an epoch; None: once
    sources: list[int] | None = None  # image counts of the sources, in order (None: one source)


def load_split(
    cfg: TrainConfig, split: str, vocab: Vocabulary | None, mirrored: bool = False
) -> tuple[CaptionSplit, Vocabulary]:
    """Read the split's captions and its cached features (and those of the mirror images, with
    `mirrored`); the train split adds the extra photo sources (`cfg.extra_data`). Builds the
    vocabulary from the train captions and the caption text (`cfg.text_data`) when not given."""
    from rnncap.data.datasets import load_dataset
    from rnncap.engine.sources import parse_sources

    parts = [(cfg.format, cfg.data, 1.0)]
    if split == "train":
        parts += [(s.format, s.path, s.weight) for s in parse_sources(cfg.extra_data)]
    loaded = []
    for fmt, root, weight in parts:
        samples = list(load_dataset(root, fmt, split))
        if cfg.limit_images:
            samples = samples[: cfg.limit_images]
        loaded.append((samples, weight))
    if vocab is None:
        vocab = _vocabulary(cfg, [samples for samples, _ in loaded])
    pieces = [_split_of(cfg, samples, vocab, mirrored, weight) for samples, weight in loaded]
    return pieces[0] if len(pieces) == 1 else _concat(pieces), vocab


def train_vocabulary(cfg: TrainConfig) -> Vocabulary:
    """The vocabulary a run without --init builds: every word of the train captions of every
    source and of the caption text seen `cfg.min_count` times."""
    from rnncap.data.datasets import load_dataset
    from rnncap.engine.sources import parse_sources

    parts = [(cfg.format, cfg.data)] + [(s.format, s.path) for s in parse_sources(cfg.extra_data)]
    loaded = []
    for fmt, root in parts:
        samples = list(load_dataset(root, fmt, "train"))
        loaded.append(samples[: cfg.limit_images] if cfg.limit_images else samples)
    return _vocabulary(cfg, loaded)


def _vocabulary(cfg: TrainConfig, loaded: list) -> Vocabulary:
    texts = [c for samples in loaded for s in samples for c in s.captions]
    return Vocabulary.build(texts + _text_captions(cfg), cfg.min_count)


def _text_captions(cfg: TrainConfig) -> list[str]:
    from rnncap.engine.sources import read_caption_text

    return [c for g in read_caption_text(cfg.text_data) for c in g] if cfg.text_data else []


def _split_of(cfg, samples, vocab: Vocabulary, mirrored: bool, weight: float) -> CaptionSplit:
    from rnncap.data.features import FeatureCache, cache_name

    features, names = FeatureCache(cfg.features, cfg.encoder).load_split(samples)
    captions = [
        [_truncate(vocab.encode(c), cfg.max_caption_words) for c in s.captions] for s in samples
    ]
    flipped = None
    if mirrored:
        flipped, _ = FeatureCache(cfg.features, cache_name(cfg.encoder, True)).load_split(samples)
    references = [s.captions for s in samples]
    weights = None if weight == 1.0 else torch.full((len(names),), weight)
    return CaptionSplit(names, features, captions, references, flipped, weights)


def _concat(pieces: list[CaptionSplit]) -> CaptionSplit:
    """One split from several sources, their images one after the other."""
    shapes = {tuple(p.features.shape[1:]) for p in pieces}
    if len(shapes) > 1:
        raise DatasetError(f"the sources' cached features differ in shape: {sorted(shapes)}")
    mirrored = None
    if all(p.mirrored is not None for p in pieces):
        mirrored = torch.cat([p.mirrored for p in pieces])
    weights = torch.cat(
        [p.weights if p.weights is not None else torch.ones(len(p.names)) for p in pieces]
    )
    return CaptionSplit(
        [n for p in pieces for n in p.names],
        torch.cat([p.features for p in pieces]),
        [c for p in pieces for c in p.captions],
        [r for p in pieces for r in p.references],
        mirrored,
        weights,
        [len(p.names) for p in pieces],
    )


def load_text(cfg: TrainConfig, vocab: Vocabulary) -> list[list[list[int]]]:
    """The caption text's groups as token ids (captions without a word in the vocabulary's
    sense, i.e. empty, dropped; empty groups too)."""
    from rnncap.engine.sources import read_caption_text

    groups = []
    for group in read_caption_text(cfg.text_data):
        ids = [_truncate(vocab.encode(c), cfg.max_caption_words) for c in group]
        ids = [i for i in ids if len(i) > 2]
        if ids:
            groups.append(ids)
    return groups


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
    weights = split.weights[:n] if split.weights is not None else None
    return CaptionSplit(
        split.names[:n],
        split.features[:n],
        split.captions[:n],
        split.references[:n],
        mirrored,
        weights,  # the first n images: sources are not tracked
    )
