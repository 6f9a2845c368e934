"""Training on more than one source: extra photo data sets sampled with a weight, and caption
text without photos (its captions teach the decoder's language side, with no visual input).

`--extra-data "coco:DIR@3"` adds a data set's train split, each of its images drawn 3 times an
epoch; `--text-data FILE --text-ratio R` adds, to every batch of B photos, R*B groups of captions
from FILE shown with an all-zero feature grid (the "no image" input). torch is imported where
it is used: `parse_sources` serves `rnncap features` without torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rnncap.utils.config import ConfigError
from rnncap.utils.io import InvalidFileError, first_line, read_text_file

if TYPE_CHECKING:
    import torch

MAX_TEXT_BYTES = 512 * 2**20  # a caption text file larger than this is refused


@dataclass(frozen=True)
class Source:
    """One extra photo data set: its format, root folder and sampling weight."""

    format: str
    path: str
    weight: float = 1.0


def parse_sources(spec: str) -> list[Source]:
    """'FORMAT:DIR[@WEIGHT],...' -> sources; a ConfigError (extra_data) naming the bad entry."""
    from rnncap.data.datasets import list_formats

    sources = []
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        fmt, sep, rest = entry.partition(":")
        if not sep or not rest:
            raise ConfigError("extra_data", f"{entry!r} is not FORMAT:DIR[@WEIGHT]")
        if fmt not in list_formats():
            raise ConfigError(
                "extra_data", f"{entry!r}: format must be one of {', '.join(list_formats())}"
            )
        path, at, weight = rest.rpartition("@") if "@" in rest else (rest, "", "1")
        try:
            value = float(weight)
        except ValueError:
            raise ConfigError(
                "extra_data", f"{entry!r}: weight {weight!r} is not a number"
            ) from None
        if not (math.isfinite(value) and 0 < value <= 100):
            raise ConfigError("extra_data", f"{entry!r}: weight must be in (0, 100], got {weight}")
        sources.append(Source(fmt, path, value))
    return sources


def read_caption_text(path: str | Path) -> list[list[str]]:
    """Groups of captions from a text file: JSON lines with a "captions" list each (one group
    per line), or plain text with one caption per line (each its own group). Blank lines are
    skipped; InvalidFileError (one line naming the file) when it is not a regular UTF-8 file of
    at most MAX_TEXT_BYTES or a line is not what it should be."""
    path = Path(path)
    try:
        lines = read_text_file(path, MAX_TEXT_BYTES, "caption text").splitlines()
    except FileNotFoundError:
        raise InvalidFileError(path, "no such file (caption text)") from None
    groups = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if path.suffix == ".jsonl":
            groups.append(_json_group(path, number, line))
        else:
            groups.append([line])
    if not groups:
        raise InvalidFileError(path, "holds no captions")
    return groups


def _json_group(path: Path, number: int, line: str) -> list[str]:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as error:  # JSONDecodeError; an over-long integer
        raise InvalidFileError(f"{path}:{number}", f"not JSON ({first_line(error)})") from None
    captions = record.get("captions") if isinstance(record, dict) else None
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise InvalidFileError(f"{path}:{number}", 'expected {"captions": [strings]}')
    return captions


def epoch_order(weights: torch.Tensor | None, n: int, generator: torch.Generator) -> torch.Tensor:
    """A shuffled epoch over n images, image i drawn weights[i] times (the fraction by chance)."""
    import torch

    if weights is None:
        return torch.randperm(n, generator=generator)
    whole = weights.floor().long()
    extra = (torch.rand(n, generator=generator) < (weights - whole)).long()
    index = torch.arange(n).repeat_interleave(whole + extra)
    return index[torch.randperm(len(index), generator=generator)]


def expected_images(weights: torch.Tensor | None, n: int) -> int:
    """Images an epoch holds on average (the learning-rate schedule's length)."""
    return n if weights is None else max(1, round(float(weights.sum())))


class TextBatches:
    """Caption groups without photos, handed out a few per batch in a seeded order per epoch."""

    def __init__(self, groups: list[list[list[int]]], ratio: float, seed: int) -> None:
        self.groups = groups  # per group, its captions as token ids with <start>/<end>
        self.ratio = ratio
        self.seed = seed
        self._order: list[int] = []
        self._next = 0

    def start_epoch(self, epoch: int) -> None:
        import torch

        generator = torch.Generator().manual_seed(self.seed * 1000 + epoch + 777)
        self._order = torch.randperm(len(self.groups), generator=generator).tolist()
        self._next = 0

    def take(self, photos: int) -> list[list[list[int]]]:
        """The next round(ratio * photos) groups (wrapping around)."""
        k = round(self.ratio * photos)
        picked = []
        for _ in range(k):
            picked.append(self.groups[self._order[self._next % len(self._order)]])
            self._next += 1
        return picked


def add_text(features, captions, counts, groups, pad_id: int):
    """Append caption groups without photos to a collated batch: each group is one more row of
    all-zero features (B + G, ...), its captions more caption rows, padded to one length."""
    import torch

    if not groups:
        return features, captions, counts
    rows = [c for g in groups for c in g]
    T = max(captions.shape[1], max(len(r) for r in rows))
    out = torch.full((captions.shape[0] + len(rows), T), pad_id, dtype=torch.long)
    out[: captions.shape[0], : captions.shape[1]] = captions
    for j, r in enumerate(rows, captions.shape[0]):
        out[j, : len(r)] = torch.tensor(r)
    blank = features.new_zeros(len(groups), *features.shape[1:])  # (G, ...) "no image"
    counts = torch.cat([counts, torch.tensor([len(g) for g in groups])])
    return torch.cat([features, blank]), out, counts
