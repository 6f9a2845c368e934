"""Feature-cache build (`rnncap features`) throughput against the bare encoder forward pass, per
encoder backend (torch eager, ONNX Runtime), thread count and, on CUDA, JPEG decoder.

The bare pass encodes tensors that were decoded and preprocessed beforehand (the upper bound);
the cache build does everything: hashing, DataLoader workers opening JPEGs, the forward pass,
float16 conversion and the atomic shard writes. Both are measured in the same run, interleaved
and best of two (target cache/bare >= 0.9). With `--backends torch onnx`, torch at the same
thread count and decoder is the reference for the other backends ("build x torch"). On CUDA the
JPEGs are decoded on the GPU (nvJPEG) and, timed too, by PIL in the DataLoader workers; ONNX
Runtime runs on the CPU only, so on CUDA only torch is measured. Shards of --shard-size images
(default 256): shards are written in the background while the next images are encoded, but the
last one after the last batch, so a build of a few hundred images with the 1,024-image shards of
`rnncap features` would time one write of its whole output after the encoder has finished.

Usage: python benchmarks/features.py [--images 256] [--device cpu] [--threads 1 2]
           [--backends torch onnx]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from functools import partial

import torch

from _data import add_data_argument, missing
from _timing import timed
from _variants import add_variant_options, variants
from rnncap.data.datasets import load_dataset
from rnncap.data.features import FeatureCache, build_cache
from rnncap.data.images import open_image
from rnncap.models.encoders import build_encoder
from rnncap.models.onnx_encoder import encoder_for_backend


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(p)
    p.add_argument("--format", default="flickr8k")
    p.add_argument("--images", type=int, default=256, help="how many images to encode")
    p.add_argument("--encoder", default="efficientnet_lite0")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=256, help="images per cache shard")
    p.add_argument("--workers", type=int, default=None, help="default: as rnncap features")
    p.add_argument("--device", default="cpu")
    add_variant_options(p)
    return p.parse_args()


def bare(encoder, images: torch.Tensor, batch_size: int, device: torch.device) -> None:
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            encoder(images[start : start + batch_size].to(device)).to(torch.float16).cpu()


def cache_build(encoder, paths, args, device: torch.device, device_decode: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp, encoder.name)
        stats = build_cache(
            paths,
            encoder,
            cache,
            device,
            args.batch_size,
            args.workers,
            args.shard_size,
            progress=False,
            device_decode=device_decode,
        )
        assert stats.computed == len(paths), stats


def measure(torch_encoder, paths, images, args, device: torch.device):
    """-> rows (threads, backend, decoder, bare s, cache build s), best of two each."""
    thread_counts, names, decoders = variants(args, device)
    rows = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        encoders = {
            name: encoder_for_backend(torch_encoder, name, device, threads=threads)[0]
            for name in names
        }
        with torch.inference_mode():
            for encoder in encoders.values():
                encoder(images[: args.batch_size].to(device))  # warm-up
        # Interleaved and best of two each: a shared machine's load drifts.
        best = {}
        for _ in range(2):
            for name, encoder in encoders.items():
                keys = [(name, "bare")] + [(name, decoder) for decoder, _ in decoders]
                runs = [partial(bare, encoder, images, args.batch_size, device)] + [
                    partial(cache_build, encoder, paths, args, device, device_decode)
                    for _, device_decode in decoders
                ]
                for key, run in zip(keys, runs, strict=True):
                    best[key] = min(best.get(key, float("inf")), timed(run, device))
        for name in encoders:
            for decoder, _ in decoders:
                rows.append((threads, name, decoder, best[name, "bare"], best[name, decoder]))
    return rows


def report(rows, n: int, header: str) -> None:
    print(header)
    print(
        f"{'threads':>7} {'backend':<8}{'decoder':<8}{'bare img/s':>11}{'build s':>9}"
        f"{'build img/s':>12}{'cache/bare':>11}{'build x torch':>14}"
    )
    reference = {(t, d): build_s for t, b, d, _, build_s in rows if b == "torch"}
    for threads, name, decoder, bare_s, build_s in rows:
        print(
            f"{threads:>7} {name:<8}{decoder:<8}{n / bare_s:>11.1f}{build_s:>9.2f}"
            f"{n / build_s:>12.1f}{bare_s / build_s:>11.3f}"
            f"{reference[threads, decoder] / build_s:>14.2f}"
        )
    print("bare: pre-loaded tensors; cache build: files -> shards (target cache/bare >= 0.9)")


def main() -> int:
    args = parse_args()
    if missing(args.data):
        return 0
    paths = [s.image for s in load_dataset(args.data, args.format, "all", report=None)]
    paths = paths[: args.images]
    device = torch.device(args.device)
    torch_encoder = build_encoder(args.encoder).to(device).eval()
    images = torch.stack([torch_encoder.preprocess(open_image(p)) for p in paths])  # (N, 3, S, S)
    rows = measure(torch_encoder, paths, images, args, device)
    header = (
        f"feature cache, {len(paths)} images, {args.encoder}, batch {args.batch_size}, "
        f"shards of {args.shard_size}, "
        f"{'auto' if args.workers is None else args.workers} workers, {args.device}"
    )
    report(rows, len(paths), header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
