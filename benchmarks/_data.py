"""Where the benchmarks find Flickr8k (../shared/data/flickr8k beside the repository, or --data),
and what they do without it: one line on stderr and exit 0 (a benchmark skips, it does not fail)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLICKR8K = REPO.parent / "shared" / "data" / "flickr8k"


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=str(FLICKR8K), help="Flickr8k folder")


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
