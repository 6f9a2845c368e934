"""The stages of a feature-cache build (`rnncap.data.features.build_cache`): hashing the files,
encoding them in batches, and writing the shards while the next ones are encoded.

On CUDA (with device decoding) reading, JPEG decoding and encoding overlap: reader threads, then
one background thread per stage on a CUDA stream of its own (`rnncap.utils.background`). On a
CPU DataLoader processes decode with PIL and this thread encodes, as before. Shards are written
by a background thread either way, one at a time, in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from rnncap.utils.device import decode_workers


def content_keys(paths: Sequence[str | Path], threads: int) -> list[str]:
    """`file_key` (SHA-1 of the bytes) of every path, hashed by `threads` threads (hashlib and
    file reads release the GIL); 0: here."""
    from rnncap.data.features import file_key

    if threads <= 0 or len(paths) < 2:
        return [file_key(p) for p in paths]
    with ThreadPoolExecutor(threads, thread_name_prefix="rnncap-hash") as pool:
        return list(pool.map(file_key, paths))


def encoded_batches(
    paths: Sequence[Path],
    encoder,
    device: torch.device,
    batch_size: int,
    workers: int | None,
    device_decode: bool,
    mirrored: bool,
) -> Iterator[tuple[torch.Tensor | None, list[int], list[tuple[str, int]]]]:
    """(features (B, C, h, w) float16 on the CPU | None, indices into paths, [(message, index)])
    per batch; `mirrored` encodes the left-right mirror images."""
    workers = decode_workers(workers, device)
    if device_decode and device.type == "cuda":
        return overlapped_batches(paths, encoder, device, batch_size, workers, mirrored)
    from torch.utils.data import DataLoader

    from rnncap.data.images import ImageFiles, collate_images

    loader = DataLoader(
        ImageFiles(paths, encoder.preprocess),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_images,
        pin_memory=device.type == "cuda",
    )
    return _encode(encoder, loader, device, mirrored)


def overlapped_batches(
    paths: Sequence[Path],
    encoder,
    device: torch.device,
    batch_size: int,
    workers: int,
    mirrored: bool,
):
    """`encoded_batches` with JPEGs decoded on `device` (`device_batches`, `workers` reader
    threads) in one background thread and encoded in another (any device; on CUDA each on a
    stream of its own)."""
    from rnncap.data.gpu_images import device_batches
    from rnncap.utils.background import in_background

    def decoded():
        return device_batches(paths, encoder, device, batch_size, workers)

    def encoded():
        return _encode(
            encoder, in_background(decoded, device, name="rnncap-decode"), device, mirrored
        )

    return in_background(encoded, device, name="rnncap-encode")


def _encode(encoder, batches, device: torch.device, mirrored: bool):
    for images, indices, bad in batches:
        features = None
        if images is not None:
            with torch.inference_mode():
                images = images.to(device, non_blocking=True)  # (B, 3, S, S)
                features = encoder(images.flip(-1) if mirrored else images)  # (B, C, h, w)
                features = features.to(torch.float16).cpu()
        yield features, indices, bad


class ShardWriter:
    """`cache.add(keys, features)` in a background thread, shards in the order given; at most
    `queued` shards wait in memory (`add` blocks for the oldest beyond that). Leaving the
    `with` block waits for every shard and raises the first write error."""

    def __init__(self, cache, queued: int = 2) -> None:
        self.cache = cache
        self.queued = queued
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="rnncap-shards")
        self._pending: deque[Future] = deque()

    def add(self, keys: list[str], features: torch.Tensor) -> None:
        while len(self._pending) >= self.queued:
            self._pending.popleft().result()  # a write error surfaces here
        self._pending.append(self._pool.submit(self.cache.add, keys, features))

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True)
