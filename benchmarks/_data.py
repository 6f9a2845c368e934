"""Where the benchmarks find Flickr8k (../shared/data/flickr8k beside the repository, or --data)
and the COCO dev photos (../shared/data/coco_dev, or --coco), and what they do without them: one
line on stderr and exit 0 (a benchmark skips, it does not fail)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLICKR8K = REPO.parent / "shared" / "data" / "flickr8k"
COCO_DEV = REPO.parent / "shared" / "data" / "coco_dev"


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=str(FLICKR8K), help="Flickr8k folder")


def add_coco_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coco", default=str(COCO_DEV), help="COCO dev folder (168 photos)")


def missing(data: str | Path) -> bool:
    """True, after saying so on stderr, when the data folder is not there."""
    if Path(data).is_dir():
        return False
    print(f"skipped: no data set at {data}", file=sys.stderr)
    return True


def test_images(data: str | Path, count: int) -> list[Path]:
    """The first `count` Flickr8k test images."""
    names = (Path(data) / "Flickr_8k.testImages.txt").read_text().split()
    return [Path(data) / "Images" / name for name in names[:count]]


def coco_dev_images(data: str | Path) -> list[Path]:
    """Every photo of the COCO dev split, in the order rnncap's COCO reader gives them."""
    from rnncap.data.datasets import load_dataset

    return [sample.image for sample in load_dataset(data, "coco", "dev", report=None)]
