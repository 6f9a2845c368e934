"""The encoder feature cache: run a CNN once over every image and keep its output on disk.

Layout: `CACHE/<encoder name>/index.json` maps the SHA-1 of an image file's bytes to a (shard,
row) in `shard_XXXX.safetensors` files of float16 features (n, C, h, w) or (n, C). Keys are the
image content, so an edited image is never served stale features; shards are written atomically
(temporary file + rename) and a build resumes by skipping the images already in the index.
The index records each shard's size and CRC-32: a damaged shard is never served (its size is
checked on open, its checksum on first read) and a build re-encodes its images.
Shards are written and read as NumPy arrays (no torch needed); `get`, `get_keys` and
`load_split` hand training torch tensors. The build itself is `rnncap.data.cache_build`.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rnncap.data.cache_build import BuildStats, build_cache  # noqa: F401 - the build, as before
from rnncap.data.file_hashes import file_crc32, file_key
from rnncap.utils.errors import DataError
from rnncap.utils.io import InvalidFileError, atomic_write, atomic_write_text, first_line

if TYPE_CHECKING:
    import torch

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
            with safe_open(str(path), framework="np") as f:
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

    def read_keys(self, keys: Sequence[str]) -> np.ndarray:
        """Features of the given content keys, stacked in order: (N, *shape) float16 NumPy."""
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
        out = np.empty((len(keys), *self.shape), dtype=np.float16)
        by_shard: dict[int, tuple[list[int], list[int]]] = {}
        for i, key in enumerate(keys):
            shard, row = self.entries[key]
            by_shard.setdefault(shard, ([], []))[0].append(i)
            by_shard[shard][1].append(row)
        for shard, (positions, rows) in sorted(by_shard.items()):
            self._check_crc(shard)
            first, last = min(rows), max(rows)  # read only the span of rows needed
            try:
                with safe_open(str(self._shard_path(shard)), framework="np") as f:
                    features = f.get_slice("features")[first : last + 1]
            except (OSError, SafetensorError) as error:
                raise InvalidFileError(
                    self._shard_path(shard),
                    f"unreadable feature shard ({first_line(error)}); "
                    "run `rnncap features` to re-encode it",
                ) from None
            out[positions] = features[np.asarray(rows) - first]
        return out

    def get_arrays(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Features of the given image files (keyed by content): (N, *shape) float16 NumPy."""
        return self.read_keys([file_key(p) for p in paths])

    def get_keys(self, keys: Sequence[str]) -> torch.Tensor:
        """`read_keys` as a torch tensor: (N, *shape) float16."""
        import torch

        return torch.from_numpy(self.read_keys(keys))

    def get(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Features of the given image files (keyed by content): (N, *shape) float16 tensor."""
        return self.get_keys([file_key(p) for p in paths])

    def load_split(self, samples: Sequence[Sample]) -> tuple[torch.Tensor, list[str]]:
        """(features (N, *shape) float16, image names) with row i belonging to samples[i]."""
        return self.get([s.image for s in samples]), [s.name for s in samples]

    # -- writing
    def add(self, keys: Sequence[str], features) -> None:
        """Store `features` (n, *shape), a NumPy array or a torch tensor, for `keys` as one new
        shard (float16), then update the index."""
        from safetensors.numpy import save

        if hasattr(features, "detach"):  # a torch tensor: NumPy from here on
            features = features.detach().cpu().half().numpy()
        features = np.ascontiguousarray(features, dtype=np.float16)
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
