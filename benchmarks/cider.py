"""CIDEr-D reward throughput: rnncap.engine.cider beside pycocoevalcap's Cider, same captions.

The scorer indexes the Flickr8k training references once, then scores 5 candidates for each of
the first --images training images against their 5 references (the SCST reward's shape).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from _data import add_data_argument
from _timing import timed
from rnncap.engine.cider import CiderD
from rnncap.engine.ptb_tokenize import ptb_tokenize


def read_split(data: Path, split: str) -> list[list[str]]:
    """Raw reference captions of a Flickr8k split, one list per image."""
    names = (data / f"Flickr_8k.{split}Images.txt").read_text().split()
    by_image: dict[str, list[str]] = {}
    for line in (data / "captions.txt").read_text(encoding="utf-8").splitlines()[1:]:
        if line.strip():
            name, caption = line.split(",", 1)
            by_image.setdefault(name, []).append(caption)
    return [by_image[name] for name in names]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    add_data_argument(p)
    p.add_argument("--images", type=int, default=1000, help="images scored per call")
    p.add_argument("--samples", type=int, default=5, help="candidates per image")
    args = p.parse_args()
    data = Path(args.data)
    if not (data / "captions.txt").is_file():
        print(f"skipped: no data set at {data}", file=sys.stderr)
        return 0
    raw = read_split(data, "train")
    tokenized = [[ptb_tokenize(c) for c in refs] for refs in raw]
    scorer: list[CiderD] = []
    build_s = timed(lambda: scorer.append(CiderD(tokenized, tokenize=False)))
    print(f"index {len(raw)} images' references: {build_s:.2f} s")

    images = np.repeat(np.arange(args.images), args.samples)  # (K,)
    donors = (images + np.tile(np.arange(args.samples), args.images)) % len(raw)
    candidates = [tokenized[d][0] for d in donors]  # other images' captions and its own
    raw_candidates = [raw[d][0] for d in donors]
    scorer[0].score(images[:10], candidates[:10])  # warm-up
    n = len(images)
    seconds = min(timed(lambda: scorer[0].score(images, candidates)) for _ in range(3))
    print(f"score {n} token lists: {seconds:.3f} s, {n / seconds:,.0f} captions/s")
    seconds = min(timed(lambda: [ptb_tokenize(c) for c in raw_candidates]) for _ in range(3))
    print(f"ptb_tokenize {n} raw captions: {seconds:.3f} s, {n / seconds:,.0f} captions/s")

    try:
        from pycocoevalcap.cider.cider_scorer import CiderScorer
    except ImportError:
        return 0

    def pycocoevalcap_scores() -> None:  # one corpus per sample: its df come from these images
        for sample in range(args.samples):
            cider = CiderScorer(n=4, sigma=6.0)
            for i in range(args.images):
                refs = [" ".join(t) for t in tokenized[i]]
                cider += (" ".join(candidates[i * args.samples + sample]), refs)
            cider.compute_score()

    seconds = timed(pycocoevalcap_scores)
    print(f"pycocoevalcap, same captions: {seconds:.3f} s, {n / seconds:,.0f} captions/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
