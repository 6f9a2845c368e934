"""Captioning images end to end: files -> DataLoader workers (decode, preprocess) -> batched encoder
-> batched beam search -> caption, score and attention per image.

Shared by `rnncap caption`, `rnncap evaluate` and `rnncap serve`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rnncap.data.images import ImageFiles, collate_images
from rnncap.decode.beam import beam_search


@dataclass
class Captioned:
    """One image's caption."""

    image: str  # the file (or upload name) it came from
    caption: str
    score: float  # sum of the words' log-probabilities (beam search score)
    words: list[str]  # the caption's words, one per attention row
    attention: torch.Tensor | None  # (L, P) on the CPU: weights behind each word (attn models)
    grid: tuple[int, int] | None  # (h, w) of the encoder's feature grid, P = h * w


@dataclass
class Failed:
    """An image that could not be captioned; `reason` is one line naming the file."""

    image: str
    reason: str


def caption_features(
    model,
    vocab,
    features: torch.Tensor,
    beam_size: int = 3,
    max_length: int | None = None,
    length_penalty: float = 0.0,
) -> list[tuple[str, float, torch.Tensor | None]]:
    """Encoder features (N, C, h, w) or (N, C) -> [(caption, score, attention (L, P) | None)]."""
    decoded = beam_search(
        model, features, beam_size=beam_size, max_length=max_length, length_penalty=length_penalty
    )
    attention = decoded.attention or [None] * len(decoded.tokens)
    return [
        (vocab.decode(tokens), float(score), weights)
        for tokens, score, weights in zip(decoded.tokens, decoded.scores, attention, strict=True)
    ]


@torch.inference_mode()
def caption_batch(
    model,
    vocab,
    images: torch.Tensor,
    names: Sequence[str],
    beam_size: int = 3,
    max_length: int | None = None,
) -> list[Captioned]:
    """Preprocessed images (N, 3, S, S) -> a `Captioned` per image: one encoder call, one search."""
    param = next(model.parameters())
    features = model.encode(images.to(param.device, non_blocking=True))  # (N, C, h, w) | (N, C)
    grid = tuple(features.shape[2:4]) if features.dim() == 4 else None
    decoded = beam_search(model, features, beam_size=beam_size, max_length=max_length)
    attention = decoded.attention or [None] * len(names)
    return [
        Captioned(
            image=str(name),
            caption=vocab.decode(tokens),
            score=float(score),
            words=[vocab.itos[t] for t in tokens],
            attention=weights.float() if weights is not None else None,
            grid=grid if weights is not None else None,
        )
        for name, tokens, score, weights in zip(
            names, decoded.tokens, decoded.scores, attention, strict=True
        )
    ]


def caption_files(
    model,
    vocab,
    paths: Sequence[str | Path],
    beam_size: int = 3,
    batch_size: int = 32,
    workers: int = 2,
    max_length: int | None = None,
    progress: bool = False,
) -> Iterator[Captioned | Failed]:
    """Caption image files, yielding one `Captioned` or `Failed` per path, in the input order.

    `workers` DataLoader processes open and preprocess the images (0: in this process) while
    this one runs the encoder and the beam search on batches of `batch_size` images.
    """
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    encoder = model.encoder  # built once here, before the workers fork
    device = next(model.parameters()).device
    loader = DataLoader(
        ImageFiles(paths, encoder.preprocess),
        batch_size=batch_size,
        num_workers=min(workers, -(-len(paths) // batch_size)),  # no idle workers
        collate_fn=collate_images,
        pin_memory=device.type == "cuda",
    )
    names = [str(p) for p in paths]
    with tqdm(total=len(names), unit="img", disable=not progress, desc="caption") as bar:
        for images, indices, bad in loader:
            results: list[tuple[int, Captioned | Failed]] = [
                (i, Failed(names[i], message)) for message, i in bad
            ]
            if images is not None:
                captions = caption_batch(
                    model, vocab, images, [names[i] for i in indices], beam_size, max_length
                )
                results += list(zip(indices, captions, strict=True))
            for _, result in sorted(results, key=lambda r: r[0]):
                yield result
            bar.update(len(results))
