"""The caption pipeline for image files on a GPU: reading, JPEG decoding, encoding and beam
search of different batches at the same time.

Reader threads load files a few batches ahead (`rnncap.data.gpu_images.device_batches`); one
background thread decodes and preprocesses each batch on the device (nvJPEG), a second runs the
encoder, each on a CUDA stream of its own (`rnncap.utils.background.in_background`), while the
calling thread runs the beam search of the batches encoded before. A search takes
`search_images` images at once (several encoder batches): it is a sequence of small steps whose
cost on a GPU hardly depends on how many images they hold.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch

from rnncap.data.gpu_images import device_batches
from rnncap.decode.beam import DecodeOptions
from rnncap.utils.background import in_background

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

    `batch_size` images per encoder call, `max(batch_size, search_images)` or so per search;
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

    stages = in_background(encoded, device, name="rnncap-encode")
    for group in _groups(stages, max(batch_size, search_images)):
        results = [(i, Failed(names[i], message)) for _, _, bad in group for message, i in bad]
        features = [f for f, _, _ in group if f is not None]
        if features:
            indices = [i for f, batch, _ in group if f is not None for i in batch]
            captions = captioner.caption_features(
                torch.cat(features), options, [names[i] for i in indices]
            )
            results += zip(indices, captions, strict=True)
        yield sorted(results, key=lambda result: result[0])


def _groups(batches, images: int) -> Iterator[list]:
    """Consecutive (features | None, indices, bad) batches gathered until they hold `images`."""
    group, count = [], 0
    for batch in batches:
        group.append(batch)
        count += len(batch[1]) + len(batch[2])
        if count >= images:
            yield group
            group, count = [], 0
    if group:
        yield group
