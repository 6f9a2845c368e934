"""Caption data sets behind one interface: a list of `Sample(image path, reference captions)`.

Formats: `flickr8k` (captions.txt or Flickr8k.token.txt + split files), `coco` (captions_*.json +
image folder) and `karpathy` (dataset_*.json). Bad lines are reported with file:line and skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rnncap.utils.errors import DataError
from rnncap.utils.io import MAX_DATA_BYTES, InvalidFileError, check_regular_file, read_json_file

SPLITS = ("train", "dev", "test", "all")
_SPLIT_ALIASES = {"val": "dev", "validation": "dev"}
MAX_REPORTED = 20  # problems printed one by one; the rest are counted


class DatasetError(DataError, ValueError):
    """The data set cannot be read at all (missing folder or file, unknown format or split)."""


@dataclass
class Sample:
    """One image and its reference captions (raw text, as in the data set)."""

    image: Path
    captions: list[str]

    @property
    def name(self) -> str:
        """The image file name: the key used for predictions and references."""
        return self.image.name


@dataclass
class CaptionDataset:
    """The samples of one split, with what was skipped while reading it."""

    format: str
    split: str
    samples: list[Sample]
    skipped: int = 0  # captions (or lines) dropped because they were malformed or had no image
    problems: list[str] = field(default_factory=list)  # "file:line: reason", one per problem

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    @property
    def num_captions(self) -> int:
        return sum(len(s.captions) for s in self.samples)

    @property
    def captions(self) -> list[str]:
        """Every caption of the split, in sample order (for building a vocabulary)."""
        return [c for s in self.samples for c in s.captions]

    def references(self) -> dict[str, list[str]]:
        """`{image name: captions}`, the references expected by `rnncap.engine.metrics.score`."""
        return {s.name: list(s.captions) for s in self.samples}

    def summary(self) -> str:
        return (
            f"{self.format} {self.split}: loaded {len(self)} images, {self.num_captions} captions; "
            f"skipped {self.skipped}"
        )


class _Problems:
    """Collects 'file:line: reason' messages and the number of skipped captions."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.skipped = 0

    def add(self, where: str, reason: str, skipped: int = 1) -> None:
        self.messages.append(f"{where}: {reason}")
        self.skipped += skipped


def _normalise_split(split: str) -> str:
    split = _SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return split


def _first_existing(candidates: list[Path], what: str) -> Path:
    for path in candidates:
        if path.exists():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise DatasetError(f"{what} not found (looked for {tried})")


def _group(
    entries: list[tuple[str, str, str]], image_dir: Path, problems: _Problems
) -> dict[str, Sample]:
    """(image name, caption, where) -> {name: Sample}; captions whose image is missing skipped."""
    samples: dict[str, Sample] = {}
    missing: dict[str, tuple[str, int]] = {}  # name -> (first place it was seen, captions)
    for name, caption, where in entries:
        if name in missing:
            missing[name] = (missing[name][0], missing[name][1] + 1)
            continue
        if name not in samples:
            image = image_dir / name
            if not image.is_file():
                missing[name] = (where, 1)
                continue
            samples[name] = Sample(image, [])
        samples[name].captions.append(caption)
    for name, (where, count) in missing.items():
        problems.add(where, f"image {name!r} not found in {image_dir} ({count} captions)", count)
    return samples


# ---------------------------------------------------------------------------------- Flickr8k


def _read_flickr8k_captions(path: Path, problems: _Problems) -> list[tuple[str, str, str]]:
    """captions.txt (`image,caption` after a header) or Flickr8k.token.txt (`IMAGE#k<TAB>text`)."""
    token_format = path.name.endswith(".token.txt")
    entries = []
    for number, line in _text_lines(path, problems):
        where = f"{path}:{number}"
        if not line.strip():
            continue
        if token_format:
            key, tab, caption = line.partition("\t")
            name, hash_, index = key.partition("#")
            if not tab or not hash_ or not index.isdigit():
                problems.add(where, "malformed line (expected IMAGE#k<TAB>caption)")
                continue
        else:
            if number == 1 and line.replace(" ", "").lower() == "image,caption":
                continue
            name, comma, caption = line.partition(",")
            if not comma:
                problems.add(where, "malformed line (expected image,caption)")
                continue
        name, caption = name.strip(), caption.strip()
        if not name or not caption:
            problems.add(where, "malformed line (empty image name or caption)")
            continue
        entries.append((name, caption, where))
    return entries


def _text_lines(path: Path, problems: _Problems) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file; a line that is not UTF-8 is reported and skipped."""
    _check_regular(path)
    try:
        with path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    yield number, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as error:
                    byte = raw[error.start]
                    problems.add(
                        f"{path}:{number}",
                        f"not UTF-8 text (byte 0x{byte:02x} at column {error.start + 1})",
                    )
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error.strerror or error})") from None


def _read_split_file(path: Path, problems: _Problems) -> list[tuple[int, str]]:
    """(line number, image name) of a split file, each name once, in file order."""
    chosen: dict[str, int] = {}
    for number, line in _text_lines(path, problems):
        if line.strip():
            chosen.setdefault(line.strip(), number)
    return [(number, name) for name, number in chosen.items()]


def load_flickr8k(root: Path, split: str, problems: _Problems) -> list[Sample]:
    """Flickr8k: captions.txt or Flickr8k.token.txt, Flickr_8k.*Images.txt, Images/."""
    text_dirs = [root, root / "Flickr8k_text"]
    captions_file = _first_existing(
        [d / n for n in ("captions.txt", "Flickr8k.token.txt") for d in text_dirs],
        "Flickr8k captions file",
    )
    image_dir = _first_existing(
        [root / n for n in ("Images", "Flicker8k_Dataset", "Flickr8k_Dataset")],
        "Flickr8k image folder",
    )
    entries = _read_flickr8k_captions(captions_file, problems)
    samples = _group(entries, image_dir, problems)
    if split == "all":
        return list(samples.values())
    split_file = _first_existing(
        [d / f"Flickr_8k.{split}Images.txt" for d in text_dirs], f"Flickr8k {split} split file"
    )
    seen = {name for name, _, _ in entries}
    chosen = []
    for number, name in _read_split_file(split_file, problems):
        if name in samples:
            chosen.append(samples[name])
        elif name not in seen:
            problems.add(f"{split_file}:{number}", f"image {name!r} has no captions", 0)
    return chosen


# -------------------------------------------------------------------------------------- COCO

_COCO_SPLIT_PREFIX = {"train": ("train",), "dev": ("val",), "test": ("test",)}


def _coco_files(root: Path, split: str) -> list[Path]:
    if root.is_file():
        return [root]
    folders = [root / "annotations", root]
    prefixes = ("train", "val", "test") if split == "all" else _COCO_SPLIT_PREFIX[split]
    files = []
    for prefix in prefixes:
        found = sorted({p for d in folders for p in d.glob(f"captions_{prefix}*.json")})
        if split != "all" and len(found) > 1:
            names = ", ".join(str(p) for p in found)
            raise DatasetError(f"several COCO {split} files ({names}); pass one as --data")
        files += found
    if not files:
        raise DatasetError(f"no captions_{prefixes[0]}*.json in {root} or {root / 'annotations'}")
    return files


def _coco_image_dir(json_path: Path) -> Path:
    """captions_val2014.json -> the folder val2014/ beside it, under images/, or one level up."""
    tag = json_path.stem.removeprefix("captions_")
    candidates = []
    for base in (json_path.parent, json_path.parent.parent):
        candidates += [base / tag, base / "images" / tag, base / "images"]
    return _first_existing(candidates, f"image folder for {json_path.name}")


def load_coco(root: Path, split: str, problems: _Problems) -> list[Sample]:
    """COCO captions: `captions_{train,val}*.json` (images + annotations) and image folders."""
    samples: list[Sample] = []
    for path in _coco_files(root, split):
        data = _read_json(path)
        image_dir = _coco_image_dir(path)
        names = {}
        for i, image in enumerate(data.get("images", [])):
            try:
                names[image["id"]] = str(image["file_name"])
            except (KeyError, TypeError):
                problems.add(f"{path}:images[{i}]", "malformed image entry", 0)
        entries = []
        for i, ann in enumerate(data.get("annotations", [])):
            where = f"{path}:annotations[{i}]"
            try:
                image_id, caption = ann["image_id"], str(ann["caption"]).strip()
            except (KeyError, TypeError):
                problems.add(where, "malformed annotation (needs image_id and caption)")
                continue
            if image_id not in names:
                problems.add(where, f"image id {image_id} is not in the images list")
            elif not caption:
                problems.add(where, "empty caption")
            else:
                entries.append((names[image_id], caption, where))
        samples += _group(entries, image_dir, problems).values()
    return samples


# ---------------------------------------------------------------------------------- Karpathy

_KARPATHY_SPLITS = {"train": {"train", "restval"}, "dev": {"val"}, "test": {"test"}}


def load_karpathy(root: Path, split: str, problems: _Problems) -> list[Sample]:
    """Karpathy's dataset_*.json: images[] with split, filepath, filename, sentences[].raw."""
    if root.is_file():
        path, base = root, root.parent
    else:
        found = sorted(root.glob("dataset_*.json"))
        if len(found) != 1:
            what = "no" if not found else "several"
            raise DatasetError(f"{what} dataset_*.json in {root}; pass the file as --data")
        path, base = found[0], root
    image_roots = [base / n for n in ("images", "Images", "Flicker8k_Dataset", "Flickr8k_Dataset")]
    image_roots = [d for d in image_roots if d.is_dir()] + [base]
    entries = []
    for i, image in enumerate(_read_json(path).get("images", [])):
        where = f"{path}:images[{i}]"
        try:
            image_split, filename = image["split"], str(image["filename"])
            relative = Path(str(image.get("filepath", ""))) / filename
            captions = [str(s["raw"]).strip() for s in image["sentences"]]
        except (KeyError, TypeError):
            problems.add(where, "malformed image entry (needs split, filename, sentences[].raw)")
            continue
        if split != "all" and image_split not in _KARPATHY_SPLITS[split]:
            continue
        captions = [c for c in captions if c]
        if not captions:
            problems.add(where, f"image {filename!r} has no captions", 0)
            continue
        image_path = next((d / relative for d in image_roots if (d / relative).is_file()), None)
        if image_path is None:
            problems.add(where, f"image {str(relative)!r} not found", len(captions))
            continue
        entries.append(Sample(image_path, captions))
    return entries


def _check_regular(path: Path) -> None:
    """A regular data file (never a device or FIFO that would not end), of a sane size."""
    try:
        check_regular_file(path, MAX_DATA_BYTES)
    except InvalidFileError as error:
        raise DatasetError(str(error)) from None
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error.strerror or error})") from None


def _read_json(path: Path) -> dict:
    try:
        data = read_json_file(path, MAX_DATA_BYTES)
    except InvalidFileError as error:
        raise DatasetError(f"{path}: cannot read JSON ({error.reason})") from None
    except OSError as error:
        raise DatasetError(f"{path}: cannot read JSON ({error.strerror or error})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    return data


FORMATS: dict[str, Callable[[Path, str, _Problems], list[Sample]]] = {
    "flickr8k": load_flickr8k,
    "coco": load_coco,
    "karpathy": load_karpathy,
}


_STDERR = object()  # "sys.stderr as it is when called" (tests and tools replace sys.stderr)


def list_formats() -> list[str]:
    """Names of the data-set formats `load_dataset` reads."""
    return list(FORMATS)


def get_format(name: str) -> Callable[[Path, str, _Problems], list[Sample]]:
    """The reader registered as `name`; an unknown name raises DatasetError listing them."""
    if name not in FORMATS:
        raise DatasetError(f"unknown format {name!r}; valid formats: {', '.join(FORMATS)}")
    return FORMATS[name]


def load_dataset(
    root: str | Path, format: str, split: str = "all", report: TextIO | None = _STDERR
) -> CaptionDataset:
    """Read one split of a caption data set.

    `format` is one of `list_formats()`; `split` one of train, dev (alias val), test, all.
    Malformed lines and captions whose image is missing are skipped; each is printed to `report`
    (None: silent) as "file:line: reason", followed by the counts loaded and skipped.
    Raises DatasetError when the data set itself cannot be found or read.
    """
    if report is _STDERR:
        report = sys.stderr
    reader = get_format(format)
    split = _normalise_split(split)
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such file or directory")
    problems = _Problems()
    samples = reader(root, split, problems)
    dataset = CaptionDataset(format, split, samples, problems.skipped, problems.messages)
    if report is not None:
        for message in problems.messages[:MAX_REPORTED]:
            print(f"warning: {message}", file=report)
        if len(problems.messages) > MAX_REPORTED:
            print(f"warning: ... and {len(problems.messages) - MAX_REPORTED} more", file=report)
        print(dataset.summary(), file=report)
    if not samples:
        raise DatasetError(f"{root}: no usable {split} samples in format {format}")
    return dataset
