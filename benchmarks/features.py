"""Feature-cache build throughput vs the bare encoder forward pass, measured in the same run.

The bare pass encodes tensors that were decoded and preprocessed beforehand (the upper bound);
the cache build does everything: hashing, DataLoader workers opening JPEGs, the forward pass,
float16 conversion and the atomic shard writes. Target: ratio >= 0.9.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from _timing import timed
from rnncap.data.datasets import load_dataset
from rnncap.data.features import FeatureCache, build_cache
from rnncap.data.images import open_image
from rnncap.models.encoders import build_encoder

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "flickr8k"))
    p.add_argument("--format", default="flickr8k")
    p.add_argument("--images", type=int, default=256, help="how many images to encode")
    p.add_argument("--encoder", default="efficientnet_lite0")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if not Path(args.data).is_dir():
        print(f"skipped: no data set at {args.data}", file=sys.stderr)
        return 0
    paths = [s.image for s in load_dataset(args.data, args.format, "all", report=None)]
    paths = paths[: args.images]
    device = torch.device(args.device)
    encoder = build_encoder(args.encoder).to(device).eval()
    images = torch.stack([encoder.preprocess(open_image(p)) for p in paths])  # (N, 3, S, S)

    def bare() -> None:
        with torch.inference_mode():
            for start in range(0, len(images), args.batch_size):
                batch = images[start : start + args.batch_size].to(device)
                encoder(batch).to(torch.float16).cpu()

    def cache_build(device_decode: bool = True) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            cache = FeatureCache(tmp, encoder.name)
            stats = build_cache(paths, encoder, cache, device, args.batch_size, args.workers,
                                progress=False, device_decode=device_decode)  # fmt: skip
            assert stats.computed == len(paths), stats

    with torch.inference_mode():
        encoder(images[: args.batch_size].to(device))  # warm-up
    # Interleaved and best of two each: a shared machine's load drifts.
    bare_s, build_s, pil_s = [], [], []
    for _ in range(2):
        bare_s.append(timed(bare, device))
        build_s.append(timed(cache_build, device))
        if device.type == "cuda":  # JPEGs decoded on the GPU above; here by PIL in the workers
            pil_s.append(timed(lambda: cache_build(device_decode=False), device))
    bare_s, build_best = min(bare_s), min(build_s)
    n = len(paths)
    print(
        f"feature cache, {n} images, {args.encoder}, batch {args.batch_size}, "
        f"{args.workers} workers, {args.device}, {torch.get_num_threads()} threads"
    )
    print(f"{'mode':<34}{'seconds':>10}{'images/s':>12}")
    print(f"{'bare forward (pre-loaded tensors)':<34}{bare_s:>10.2f}{n / bare_s:>12.1f}")
    print(f"{'cache build (files -> shards)':<34}{build_best:>10.2f}{n / build_best:>12.1f}")
    if pil_s:
        print(f"{'cache build, PIL in workers':<34}{min(pil_s):>10.2f}{n / min(pil_s):>12.1f}")
    print(f"ratio cache/bare: {bare_s / build_best:.3f} (target >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
