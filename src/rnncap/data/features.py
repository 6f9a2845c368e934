"""The encoder feature cache: run a CNN once over every image and keep its output on disk.

Layout: `CACHE/<encoder name>/index.json` maps the SHA-1 of an image file's bytes to a (shard,
row) in `shard_XXXX.safetensors` files of float16 features (n, C, h, w) or (n, C). Keys are the
image content, so an edited image is never served stale features; shards are written atomically
(temporary file + rename) and a build resumes by skipping the images already in the index.
The index records each shard's size and CRC-32: a damaged shard is never served (its size is
checked on open, its checksum on first read) and a build re-encodes its images.
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rnncap.data.file_hashes import file_crc32, file_key
from rnncap.utils.device import decode_workers
from rnncap.utils.errors import DataError
from rnncap.utils.io import InvalidFileError, atomic_write, atomic_write_text, first_line

if TYPE_CHECKING:
    import torch
    from torch import nn

    from rnncap.data.datasets import Sample

INDEX = "index.json"
CACHE_VERSION = 1
MIRRORED = "-mirrored"  # cache name suffix: features of the left-right mirror images


def cache_name(encoder_name: str, mirrored: bool = False) -> str:
    """The cache folder of an encoder's features: its name, + MIRRORED for the mirror images."""
    return encoder_name + MIRRORED if mirrored else encoder_name


class MissingFeaturesError(DataError, KeyError):
    """Some images are not in the cache (never encoded, or changed since)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class FeatureCacheError(DataError, ValueError):
    """Features that do not belong in this cache (another encoder, another shape)."""


class FeatureCache:
    """The cached features of one encoder: `get(paths)`, `load_split(samples)`, `add(keys, x)`."""

    def __init__(self, path: str | Path, encoder_name: str):
        self.root = Path(path)
        self.encoder_name = encoder_name
        self.dir = self.root / encoder_name
        self.entries: dict[str, tuple[int, int]] = {}  # content key -> (shard number, row)
        self.shape: list[int] | None = None  # per-image feature shape, e.g. [C, h, w]
        self.shards: dict[int, dict] = {}  # shard number -> {"bytes": size, "crc32": checksum}
        self.damaged: dict[int, str] = {}  # shard number -> what is wrong; its rows are dropped
        self._verified: set[int] = set()  # shards whose checksum was checked by this process
        self._read_index()

    # -- reading
    def _read_index(self) -> None:
        index = self.dir / INDEX
        if index.is_file():
            try:
                data = json.loads(index.read_text(encoding="utf-8"))
                encoder, version = data.get("encoder"), data.get("version")
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
                raise InvalidFileError(
                    index, f"not a feature cache index ({first_line(error)})"
                ) from None
            if encoder != self.encoder_name or version != CACHE_VERSION:
                raise InvalidFileError(index, f"written for {encoder!r}, not this encoder")
            try:
                self.shape = data["shape"]
                self.entries = {k: (int(s), int(r)) for k, (s, r) in data["entries"].items()}
                self.shards = {
                    int(n): {"bytes": int(r["bytes"]), "crc32": int(r["crc32"])}
                    for n, r in data.get("shards", {}).items()
                }
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                raise InvalidFileError(index, f"malformed index ({first_line(error)})") from None
        # Shards written after the last index update (a crash in between) are adopted here.
        known = {s for s, _ in self.entries.values()}
        for shard in self._shard_numbers():
            if shard not in known:
                self._adopt(shard)
        for shard in sorted(known):
            problem = self._size_problem(shard)
            if problem:
                self._drop(shard, problem)

    def _size_problem(self, shard: int) -> str | None:
        path = self._shard_path(shard)
        if not path.is_file():
            return "missing"
        record = self.shards.get(shard)
        size = path.stat().st_size
        if record is not None and size != record["bytes"]:
            return f"truncated or overwritten: {size} bytes, the index records {record['bytes']}"
        return None

    def _drop(self, shard: int, problem: str) -> None:
        """Forget a damaged shard's rows: they count as not cached, and a build re-encodes them."""
        self.damaged[shard] = problem
        self.entries = {k: v for k, v in self.entries.items() if v[0] != shard}

    def _shard_numbers(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        numbers = []
        for p in self.dir.glob("shard_*.safetensors"):
            number = p.stem.split("_")[1]
            if number.isdigit():
                numbers.append(int(number))
        return sorted(numbers)

    def _shard_path(self, shard: int) -> Path:
        return self.dir / f"shard_{shard:04d}.safetensors"

    def _adopt(self, shard: int) -> None:
        from safetensors import SafetensorError, safe_open

        path = self._shard_path(shard)
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                shape = list(f.get_slice("features").get_shape())[1:]
            keys = json.loads(metadata.get("keys", "[]")) if metadata.get("encoder") else []
        except (OSError, SafetensorError, json.JSONDecodeError) as error:
            self.damaged[shard] = f"unreadable ({first_line(error)})"
            return
        if metadata.get("encoder") != self.encoder_name:
            return
        self.shape = self.shape or shape
        self.shards[shard] = {"bytes": path.stat().st_size, "crc32": file_crc32(path)}
        for row, key in enumerate(keys):
            self.entries.setdefault(key, (shard, row))

    def verify(self) -> dict[int, str]:
        """Check every shard's checksum now (a build does, before trusting the cache); damaged
        shards are dropped. Returns {shard number: problem} for every damaged shard."""
        for shard in sorted({s for s, _ in self.entries.values()}):
            self._check_crc(shard, raise_error=False)
        return dict(self.damaged)

    def _check_crc(self, shard: int, raise_error: bool = True) -> None:
        record = self.shards.get(shard)
        if shard in self._verified or record is None:
            return
        crc = file_crc32(self._shard_path(shard))
        if crc != record["crc32"]:
            problem = f"corrupt: CRC-32 {crc:08x}, the index records {record['crc32']:08x}"
            self._drop(shard, problem)
            if raise_error:
                raise InvalidFileError(
                    self._shard_path(shard),
                    f"damaged feature shard: {problem}; run `rnncap features` to re-encode it",
                )
            return
        self._verified.add(shard)

    def remove_damaged(self) -> list[str]:
        """Verify every shard, delete the damaged ones and rewrite the index; one message per
        deleted shard. Their images count as not cached, so a build re-encodes them."""
        self.verify()
        messages = []
        for shard, problem in sorted(self.damaged.items()):
            path = self._shard_path(shard)
            path.unlink(missing_ok=True)
            self.shards.pop(shard, None)
            messages.append(f"{path}: damaged feature shard ({problem}); its images are re-encoded")
        self.damaged.clear()
        if messages and (self.dir / INDEX).is_file():
            self._write_index()
        return messages

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get_keys(self, keys: Sequence[str]) -> torch.Tensor:
        """Features of the given content keys, stacked in order: (N, *shape) float16."""
        import torch
        from safetensors import SafetensorError, safe_open

        missing = [k for k in keys if k not in self.entries]
        if missing or self.shape is None:
            damaged = "".join(
                f"; {self._shard_path(n).name} is damaged ({problem})"
                for n, problem in sorted(self.damaged.items())
            )
            mirrored = " --mirrored" if self.encoder_name.endswith(MIRRORED) else ""
            raise MissingFeaturesError(
                f"{len(missing)} of {len(keys)} images are not in the {self.encoder_name} cache "
                f"at {self.root}{damaged} (run `rnncap features{mirrored}` first)"
            )
        out = torch.empty((len(keys), *self.shape), dtype=torch.float16)
        by_shard: dict[int, tuple[list[int], list[int]]] = {}
        for i, key in enumerate(keys):
            shard, row = self.entries[key]
            by_shard.setdefault(shard, ([], []))[0].append(i)
            by_shard[shard][1].append(row)
        for shard, (positions, rows) in sorted(by_shard.items()):
            self._check_crc(shard)
            first, last = min(rows), max(rows)  # read only the span of rows needed
            try:
                with safe_open(str(self._shard_path(shard)), framework="pt") as f:
                    features = f.get_slice("features")[first : last + 1]
            except (OSError, SafetensorError) as error:
                raise InvalidFileError(
                    self._shard_path(shard),
                    f"unreadable feature shard ({first_line(error)}); "
                    "run `rnncap features` to re-encode it",
                ) from None
            out[torch.tensor(positions)] = features[torch.tensor(rows) - first]
        return out

    def get(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Features of the given image files (keyed by content): (N, *shape) float16."""
        return self.get_keys([file_key(p) for p in paths])

    def load_split(self, samples: Sequence[Sample]) -> tuple[torch.Tensor, list[str]]:
        """(features (N, *shape) float16, image names) with row i belonging to samples[i]."""
        return self.get([s.image for s in samples]), [s.name for s in samples]

    # -- writing
    def add(self, keys: Sequence[str], features: torch.Tensor) -> None:
        """Store `features` (n, *shape) for `keys` as one new shard, then update the index."""
        import torch
        from safetensors.torch import save

        features = features.detach().to("cpu", dtype=torch.float16).contiguous()
        shape = list(features.shape[1:])
        if self.shape is not None and shape != self.shape:
            raise FeatureCacheError(
                f"{self.dir}: feature shape {shape} does not match the cache's {self.shape}"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        shard = max(self._shard_numbers(), default=-1) + 1
        metadata = {"encoder": self.encoder_name, "keys": json.dumps(list(keys))}
        data = save({"features": features}, metadata=metadata)
        atomic_write(self._shard_path(shard), lambda tmp: tmp.write_bytes(data))
        self.shards[shard] = {"bytes": len(data), "crc32": zlib.crc32(data)}
        self._verified.add(shard)
        self.shape = shape
        for row, key in enumerate(keys):
            self.entries[key] = (shard, row)
        self._write_index()

    def _record_shards(self) -> set[int]:
        """The shards the index points into, each with its size and checksum recorded."""
        used = {s for s, _ in self.entries.values()}
        for shard in used - set(self.shards):  # an index written before checksums were kept
            path = self._shard_path(shard)
            self.shards[shard] = {"bytes": path.stat().st_size, "crc32": file_crc32(path)}
        return used

    def _write_index(self) -> None:
        data = {
            "version": CACHE_VERSION,
            "encoder": self.encoder_name,
            "shape": self.shape,
            "dtype": "float16",
            "entries": {k: list(v) for k, v in self.entries.items()},
            "shards": {str(n): self.shards[n] for n in sorted(self._record_shards())},
        }
        text = json.dumps(data, separators=(",", ":"))
        atomic_write_text(self.dir / INDEX, text)


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
    encoder: nn.Module,
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

    `workers` DataLoader processes open and preprocess the images (None: the cores the encoder
    leaves free, `decode_workers`); they are encoded in batches, stored as float16, `shard_size`
    per shard, written in the background; stopping keeps every finished shard, so a rerun
    resumes. On CUDA with `device_decode`, reading (threads), JPEG decoding on the GPU and
    encoding overlap (`rnncap.data.cache_build`). `mirrored`: encode the mirror images into a
    cache named `cache_name(encoder, True)`."""
    import torch

    from rnncap.data.cache_build import encoded_batches

    name = getattr(encoder, "name", None)
    if name is not None and cache_name(name, mirrored) != cache.encoder_name:
        raise FeatureCacheError(f"encoder {name!r} does not match cache {cache.encoder_name!r}")
    for message in cache.remove_damaged():
        print(f"warning: {message}", file=sys.stderr)
    device = torch.device(device)
    by_key, todo = _missing(list(paths), cache, decode_workers(workers, device))
    stats = BuildStats(len(by_key), len(by_key) - len(todo), 0, [], 0.0)
    if not todo:
        return stats
    encoder = encoder.to(device).eval()
    batches = encoded_batches(
        [by_key[k] for k in todo], encoder, device, batch_size, workers, device_decode, mirrored
    )
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
    """Gather `encoded_batches` into shards of `shard_size` images, written in the background;
    failures and counts go to `stats`."""
    import torch
    from tqdm import tqdm

    from rnncap.data.cache_build import ShardWriter

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
                writer.add(pending_keys, torch.cat(pending))
                pending_keys, pending = [], []
            bar.update(len(indices) + len(bad))
        if pending_keys:
            writer.add(pending_keys, torch.cat(pending))


def _missing(paths: list, cache: FeatureCache, threads: int) -> tuple[dict[str, Path], list[str]]:
    """({content key: the first path with that content}, the keys `cache` lacks); the files are
    hashed by `threads` threads."""
    from rnncap.data.cache_build import content_keys

    by_key: dict[str, Path] = {}
    for key, path in zip(content_keys(paths, threads), paths, strict=True):
        by_key.setdefault(key, Path(path))
    return by_key, [k for k in by_key if k not in cache]
