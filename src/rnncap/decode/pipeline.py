"""The caption pipeline for image files on a GPU: reading, JPEG decoding, encoding and beam
search of different batches at the same time.

Reader threads load files a few batches ahead (`rnncap.data.gpu_images.device_batches`); one
background thread decodes and preprocesses each batch on the device (nvJPEG), a second runs the
encoder, each on a CUDA stream of its own (`rnncap.utils.background.in_background`), while the
calling thread runs the beam search of the batches encoded before. A search takes every batch
encoded while the previous one ran, up to `search_images` images: it is a sequence of small
steps whose cost on a GPU hardly depends on how many images they hold, so a search that falls
behind the encoder catches up, and one that keeps up leaves only one batch to search at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch

from rnncap.data.gpu_images import device_batches
from rnncap.decode.beam import DecodeOptions
from rnncap.utils.background import Background, in_background

SEARCH_IMAGES = 512  # images per beam search on a GPU (at least one encoder batch)


def caption_stream(
    captioner,
    paths: Sequence[str | os.PathLike],
    options: DecodeOptions,
    batch_size: int = 32,
    workers: int = 8,
    search_images: int = SEARCH_IMAGES,
) -> Iterator[list[tuple[int, object]]]:
    """Caption files with the stages overlapped; yields, group after group in input order,
    [(index into paths, `Caption` or `Failed`)] sorted by index.

    `batch_size` images per encoder call, at most `max(batch_size, search_images)` per search;
    `workers` reader threads. Runs on any device (on a CPU the stages are threads without
    streams), the same results as encoding and searching each group in one go.
    """
    from rnncap.decode.captioner import Failed

    device = captioner.device
    names = [str(p) for p in paths]
    encoder = captioner.model.encoder  # built here, once, not in a stage thread

    def decoded():
        return device_batches(paths, encoder, device, batch_size, workers)

    def encoded():
        for images, indices, bad in in_background(decoded, device, name="rnncap-decode"):
            features = captioner.encode_images(images) if images is not None else None
            yield features, indices, bad

    search_images = max(batch_size, search_images)
    stages = Background(encoded, device, max(2, search_images // batch_size), "rnncap-encode")
    try:
        for group in _groups(stages, search_images):
            results = [(i, Failed(names[i], message)) for _, _, bad in group for message, i in bad]
            features = [f for f, _, _ in group if f is not None]
            if features:
                indices = [i for f, batch, _ in group if f is not None for i in batch]
                captions = captioner.caption_features(
                    torch.cat(features), options, [names[i] for i in indices]
                )
                results += zip(indices, captions, strict=True)
            yield sorted(results, key=lambda result: result[0])
    finally:
        stages.close()


def _groups(batches: Background, images: int) -> Iterator[list]:
    """(features | None, indices, bad) batches, each with those encoded while the previous
    search ran, up to `images` images: a search that keeps up takes one batch (the last one
    waits least), one that falls behind takes more at once (a step costs about the same)."""
    for batch in batches:
        group, count = [batch], len(batch[1]) + len(batch[2])
        while count < images and batches.ready():
            batch = next(batches, None)
            if batch is None:
                break
            group.append(batch)
            count += len(batch[1]) + len(batch[2])
        yield group
