"""A feature-cache build (`build_cache`, also importable from `rnncap.data.features`): hashing
the files, encoding them in batches, and writing the shards while the next ones are encoded.

On CUDA (with device decoding) reading, JPEG decoding and encoding overlap: reader threads, then
one background thread per stage on a CUDA stream of its own (`rnncap.utils.background`). On a
CPU DataLoader processes decode with PIL and this thread encodes, as before. Shards are written
by a background thread either way, one at a time, in order. An encoder of NumPy arrays (the
ONNX graph of `rnncap.models.onnx_graph.GraphEncoder`) needs no torch: a thread reads and
preprocesses the next batch while ONNX Runtime encodes this one (`array_batches`).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from rnncap.data.features import FeatureCache


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
) -> Iterator[tuple[np.ndarray | None, list[int], list[tuple[str, int]]]]:
    """(features (B, C, h, w) float16 NumPy | None, indices into paths, [(message, index)]) per
    batch of a torch encoder; `mirrored` encodes the left-right mirror images."""
    from rnncap.utils.device import decode_workers

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
    import torch

    for images, indices, bad in batches:
        features = None
        if images is not None:
            with torch.inference_mode():
                images = images.to(device, non_blocking=True)  # (B, 3, S, S)
                features = encoder(images.flip(-1) if mirrored else images)  # (B, C, h, w)
                features = features.to(torch.float16).cpu().numpy()  # NumPy from here on
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

    def add(self, keys: list[str], features: np.ndarray) -> None:
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


def array_batches(
    paths: Sequence[Path], encoder, batch_size: int, mirrored: bool
) -> Iterator[tuple[np.ndarray | None, list[int], list[tuple[str, int]]]]:
    """`encoded_batches` of an encoder of NumPy arrays (`pixels(pil, out)`, `run(images)`: a
    `GraphEncoder`), without torch: one thread reads and preprocesses the next batch while this
    one is encoded (PIL and ONNX Runtime release the GIL)."""
    from rnncap.data.images import ImageFiles, collate_arrays

    files = ImageFiles(paths, encoder.pixels)
    spans = [range(s, min(s + batch_size, len(paths))) for s in range(0, len(paths), batch_size)]

    def read(span: range):
        return collate_arrays([files[i] for i in span])

    with ThreadPoolExecutor(1, thread_name_prefix="rnncap-read") as reader:
        jobs = (reader.submit(read, span) for span in spans)
        ahead = next(jobs, None)
        while ahead is not None:
            current, ahead = ahead, next(jobs, None)  # the next batch queued behind this one
            images, indices, bad = current.result()  # (B, 3, S, S) float32 | None
            features = None
            if images is not None:
                features = encoder.run(images[..., ::-1] if mirrored else images)
                features = features.astype(np.float16)  # (B, C, h, w)
            yield features, indices, bad


def _is_array_encoder(encoder) -> bool:
    """An encoder of NumPy arrays (`GraphEncoder`: `run(images)`, not called like a module)."""
    return hasattr(encoder, "run") and not callable(encoder)


@dataclass
class BuildStats:
    """What one `build_cache` call did."""

    images: int  # distinct image contents asked for
    cached_before: int  # of those, already in the cache
    computed: int  # encoded by this call
    failed: list[str]  # "path: reason" for images that could not be read
    seconds: float  # time of the encoding loop (hashing excluded)

    @property
    def images_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0


def build_cache(
    paths: Iterable[str | Path],
    encoder,
    cache: FeatureCache,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    workers: int | None = None,
    shard_size: int = 1024,
    progress: bool = True,
    device_decode: bool = True,
    mirrored: bool = False,
) -> BuildStats:
    """Encode every image of `paths` that `cache` lacks and add the features to it.

    `encoder`: a torch encoder (an `nn.Module` with `name` and `preprocess`, or `OnnxEncoder`),
    or an encoder of NumPy arrays (`GraphEncoder`), which runs on the CPU without torch.
    `workers` DataLoader processes open and preprocess the images (None: the cores the encoder
    leaves free, `decode_workers`); they are encoded in batches, stored as float16, `shard_size`
    per shard, written in the background; stopping keeps every finished shard, so a rerun
    resumes. On CUDA with `device_decode`, reading (threads), JPEG decoding on the GPU and
    encoding overlap. `mirrored`: encode the mirror images into a cache named
    `cache_name(encoder, True)`. A `GraphEncoder`'s images are read by one thread ahead of it;
    `workers` threads (None: 0) hash the files."""
    from rnncap.data.features import FeatureCacheError, cache_name

    name = getattr(encoder, "name", None)
    if name is not None and cache_name(name, mirrored) != cache.encoder_name:
        raise FeatureCacheError(f"encoder {name!r} does not match cache {cache.encoder_name!r}")
    for message in cache.remove_damaged():
        print(f"warning: {message}", file=sys.stderr)
    arrays = _is_array_encoder(encoder)
    if arrays:
        threads = workers or 0
    else:
        import torch

        from rnncap.utils.device import decode_workers

        device = torch.device(device)
        threads = decode_workers(workers, device)
    by_key, todo = _missing(list(paths), cache, threads)
    stats = BuildStats(len(by_key), len(by_key) - len(todo), 0, [], 0.0)
    if not todo:
        return stats
    todo_paths = [by_key[k] for k in todo]
    if arrays:
        batches = array_batches(todo_paths, encoder, batch_size, mirrored)
    else:
        encoder = encoder.to(device).eval()
        args = (batch_size, workers, device_decode, mirrored)
        batches = encoded_batches(todo_paths, encoder, device, *args)
    start = time.perf_counter()
    _write_shards(batches, todo, cache, stats, shard_size, progress)
    stats.seconds = time.perf_counter() - start
    for message in stats.failed:
        print(f"warning: {message} (skipped)", file=sys.stderr)
    return stats


def _write_shards(
    batches,
    todo: list[str],
    cache: FeatureCache,
    stats: BuildStats,
    shard_size: int,
    progress: bool,
) -> None:
    """Gather encoded batches into shards of `shard_size` images, written in the background;
    failures and counts go to `stats`."""
    from tqdm import tqdm

    pending_keys, pending = [], []  # keys and (B, C, h, w) features not yet in a shard
    with (
        ShardWriter(cache) as writer,
        tqdm(total=len(todo), unit="img", disable=not progress, desc=cache.encoder_name) as bar,
    ):
        for features, indices, bad in batches:
            stats.failed += [message for message, _ in bad]  # each names its file
            if features is not None:
                pending.append(features)
                pending_keys += [todo[i] for i in indices]
                stats.computed += len(indices)
            if len(pending_keys) >= shard_size:
                writer.add(pending_keys, np.concatenate(pending))
                pending_keys, pending = [], []
            bar.update(len(indices) + len(bad))
        if pending_keys:
            writer.add(pending_keys, np.concatenate(pending))


def _missing(paths: list, cache: FeatureCache, threads: int) -> tuple[dict[str, Path], list[str]]:
    """({content key: the first path with that content}, the keys `cache` lacks); the files are
    hashed by `threads` threads."""
    by_key: dict[str, Path] = {}
    for key, path in zip(content_keys(paths, threads), paths, strict=True):
        by_key.setdefault(key, Path(path))
    return by_key, [k for k in by_key if k not in cache]
