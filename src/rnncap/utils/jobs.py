"""Large captioning jobs: a stable share of the input per process (`--shard I/N`) and a
JSON-lines output that keeps every finished line through a kill and is continued (`--resume`).

No coordination between processes: shard I of N is every N-th path of the sorted input starting
at I, so N processes given the same input split it whatever launched them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from rnncap.utils.errors import RnncapError
from rnncap.utils.io import atomic_write_text

P = TypeVar("P")

# (index variable, count variable, first index variable or None): torchrun and Slurm arrays
SHARD_ENVIRONMENTS = (
    ("RANK", "WORLD_SIZE", None),
    ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"),
)
SETTINGS_SUFFIX = ".settings.json"  # beside the output: what it was written with
SYNC_SECONDS = 10.0  # the output is flushed every line and fsync'ed this often


class JobError(RnncapError, ValueError):
    """A bad --shard value or output file; the message is one line naming it."""


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """Shard "I/N" (0 <= I < N) -> (I, N); "auto" reads RANK and WORLD_SIZE (torchrun), else a Slurm
    array's SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT (less SLURM_ARRAY_TASK_MIN)."""
    environ = os.environ if environ is None else environ
    if text == "auto":
        for index_name, count_name, first_name in SHARD_ENVIRONMENTS:
            if index_name in environ and count_name in environ:
                first = int(environ.get(first_name, "0")) if first_name else 0
                try:
                    return _checked(int(environ[index_name]) - first, int(environ[count_name]))
                except ValueError:
                    raise JobError(
                        f"--shard auto: {index_name}={environ[index_name]!r} and "
                        f"{count_name}={environ[count_name]!r} are not a shard"
                    ) from None
        raise JobError("--shard auto: neither RANK/WORLD_SIZE nor a Slurm array is set")
    index, _, count = text.partition("/")
    try:
        return _checked(int(index), int(count))
    except ValueError:
        raise JobError(f"--shard {text}: expected I/N with 0 <= I < N, e.g. 0/4, or auto") from None


def _checked(index: int, count: int) -> tuple[int, int]:
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}")
    return index, count


def take_shard(paths: Sequence[P], index: int, count: int) -> list[P]:
    """Shard `index` of `count`: every count-th path of the input sorted by path, from `index`."""
    return sorted(paths, key=str)[index::count]


class JsonLinesOutput:
    """Records appended to a JSON-lines file, one flushed line each, so a killed job keeps every
    finished one. With `resume` the file's records are read first (`done`: their "image"
    values); a torn last line (a kill mid-write) is cut off and its image done again. The
    settings are kept in FILE.settings.json; resuming with different ones is refused."""

    def __init__(self, path: str | os.PathLike, settings: dict, resume: bool) -> None:
        self.path = Path(path)
        self.settings_path = self.path.with_name(self.path.name + SETTINGS_SUFFIX)
        self.done: set[str] = set()
        self.dropped_torn_line = False
        self.written = 0  # records written by this process
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if exists and not resume:
            raise JobError(
                f"--out {self.path}: already holds captions (add --resume to continue it, or "
                "choose another file)"
            )
        if self.path.exists() and not self.path.is_file():
            raise JobError(f"--out {self.path}: not a file")
        if resume:
            self._check_settings(settings)
            if exists:
                self._read()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.settings_path, json.dumps(settings, indent=1) + "\n")
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed by close()
        self._synced = time.monotonic()

    def _check_settings(self, settings: dict) -> None:
        if not self.settings_path.is_file():
            return  # nothing recorded to compare with
        try:
            before = json.loads(self.settings_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise JobError(f"{self.settings_path}: unreadable ({error})") from None
        keys = sorted(set(before) | set(settings))
        changed = [k for k in keys if before.get(k) != settings.get(k)]
        if changed:
            what = ", ".join(f"{k} {before.get(k)!r} now {settings.get(k)!r}" for k in changed)
            raise JobError(
                f"--resume: {self.path} was written with other settings ({what}); use the same "
                "ones, or another --out"
            )

    def _read(self) -> None:
        """Collect the finished records' images; cut off a torn last line."""
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1  # bytes up to the last newline
        lines = data[:complete].split(b"\n")[:-1]
        keep = complete
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
                self.done.add(record["image"])
            except (ValueError, KeyError, TypeError):
                if number < len(lines):
                    raise JobError(
                        f"--resume: {self.path} line {number} is not a caption record"
                    ) from None
                keep = complete - len(line) - 1  # a damaged last line: done again
        if keep < len(data):
            self.dropped_torn_line = True
            with open(self.path, "r+b") as f:
                f.truncate(keep)

    def write(self, record: dict) -> None:
        self._file.write((json.dumps(record) + "\n").encode())
        self._file.flush()
        self.written += 1
        if time.monotonic() - self._synced > SYNC_SECONDS:
            self._sync()

    def _sync(self) -> None:
        os.fsync(self._file.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        if not self._file.closed:
            self._sync()
            self._file.close()
