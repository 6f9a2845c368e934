"""`rnncap features` with the torch encoder and with its ONNX Runtime twin (`--backend`): the
feature-cache build and the bare encoder forward pass per backend, measured in the same run.

The bare pass encodes tensors that were decoded and preprocessed beforehand (the upper bound);
the cache build does everything: hashing, DataLoader workers opening JPEGs, the forward pass,
float16 conversion and the atomic shard writes. CPU only (the onnx backend runs on the CPU).

Usage: python benchmarks/feature_backends.py [--images 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from functools import partial
from pathlib import Path

import torch

from _timing import timed
from rnncap.data.datasets import load_dataset
from rnncap.data.features import FeatureCache, build_cache
from rnncap.data.images import open_image
from rnncap.models.encoders import build_encoder
from rnncap.models.onnx_encoder import encoder_for_backend

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
    p.add_argument("--threads", type=int, default=None, help="intra-op threads")
    p.add_argument(
        "--backends", nargs="+", default=["torch", "onnx"], choices=("torch", "onnx"),
        help="encoder backends (torch is always measured, as the reference)",
    )  # fmt: skip
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not Path(args.data).is_dir():
        print(f"skipped: no data set at {args.data}", file=sys.stderr)
        return 0
    paths = [s.image for s in load_dataset(args.data, args.format, "all", report=None)]
    paths = paths[: args.images]
    device = torch.device(args.device)
    torch_encoder = build_encoder(args.encoder).to(device).eval()
    images = torch.stack([torch_encoder.preprocess(open_image(p)) for p in paths])  # (N, 3, S, S)
    encoders = {"torch": torch_encoder}
    if "onnx" in args.backends and device.type == "cpu":
        encoders["onnx"] = encoder_for_backend(torch_encoder, "onnx", device)[0]

    def bare(encoder) -> None:
        with torch.inference_mode():
            for start in range(0, len(images), args.batch_size):
                batch = images[start : start + args.batch_size].to(device)
                encoder(batch).to(torch.float16).cpu()

    def cache_build(encoder) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            cache = FeatureCache(tmp, encoder.name)
            stats = build_cache(
                paths, encoder, cache, device, args.batch_size, args.workers, progress=False
            )
            assert stats.computed == len(paths), stats

    # Interleaved and best of two each: a shared machine's load drifts.
    bare_s = {name: float("inf") for name in encoders}
    build_s = dict(bare_s)
    with torch.inference_mode():
        for encoder in encoders.values():
            encoder(images[: args.batch_size].to(device))  # warm-up
    for _ in range(2):
        for name, encoder in encoders.items():
            bare_s[name] = min(bare_s[name], timed(partial(bare, encoder), device))
            build_s[name] = min(build_s[name], timed(partial(cache_build, encoder), device))
    n = len(paths)
    print(
        f"feature cache, {n} images, {args.encoder}, batch {args.batch_size}, "
        f"{args.workers} workers, {args.device}, {torch.get_num_threads()} threads"
    )
    print(
        f"{'backend':<8}{'bare forward img/s':>20}{'cache build img/s':>19}"
        f"{'cache/bare':>12}{'build x torch':>15}"
    )
    for name in encoders:
        print(
            f"{name:<8}{n / bare_s[name]:>20.1f}{n / build_s[name]:>19.1f}"
            f"{bare_s[name] / build_s[name]:>12.3f}{build_s['torch'] / build_s[name]:>15.2f}"
        )
    print("bare: pre-loaded tensors; cache build: files -> shards (target cache/bare >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
