"""Images/s of the frozen encoder under each CPU runtime, torch eager being the reference.

torch eager, torch channels_last, TorchScript frozen + optimize_for_inference, torch.compile
(inductor) and ONNX Runtime (the exported graph), on the same preprocessed images, per thread
count; each runtime's best of --repeats interleaved rounds, and its largest feature difference
from torch eager.

Usage: python benchmarks/encoder_runtimes.py [--images 64] [--threads 1 2] [--no-compile]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from _data import add_data_argument, missing, test_images
from _timing import timed
from rnncap.data.images import open_image
from rnncap.models.encoders import build_encoder
from rnncap.models.onnx_encoder import OnnxEncoder, export_encoder


def runtimes(encoder, onnx_path: Path, example: torch.Tensor, threads: int, compile_too: bool):
    """name -> callable images -> features, each built for `threads` threads."""
    torch.set_num_threads(threads)
    found = {"torch eager": encoder}
    channels_last = build_encoder(encoder.name).to(memory_format=torch.channels_last)
    found["torch channels_last"] = lambda x: channels_last(
        x.contiguous(memory_format=torch.channels_last)
    )
    with torch.no_grad():  # traced: the efficientnet_lite_pytorch blocks do not script
        traced = torch.jit.trace(encoder, example)
        found["torch.jit trace+freeze+optimize"] = torch.jit.optimize_for_inference(
            torch.jit.freeze(traced)
        )
    if compile_too:
        start = time.perf_counter()
        compiled = torch.compile(build_encoder(encoder.name))
        try:
            with torch.inference_mode():
                compiled(example)  # compiles here
            print(f"torch.compile: {time.perf_counter() - start:.0f} s to compile", file=sys.stderr)
            found["torch.compile (inductor)"] = compiled
        except Exception as error:  # no C compiler, an unsupported op...
            reason = " ".join(str(error).split())[:120]
            print(f"torch.compile skipped: {reason}", file=sys.stderr)
    found["onnxruntime"] = OnnxEncoder(onnx_path, threads=threads)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(parser)
    parser.add_argument("--images", type=int, default=64, help="test images to encode")
    parser.add_argument("--batch-size", type=int, default=16, help="images per call")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts")
    parser.add_argument("--repeats", type=int, default=2, help="rounds; the best counts")
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    args = parser.parse_args()
    if missing(args.data):
        return 0
    encoder = build_encoder(args.encoder)
    paths = test_images(args.data, args.images)
    images = torch.stack([encoder.preprocess(open_image(p)) for p in paths])  # (N, 3, S, S)
    batches = list(images.split(args.batch_size))
    print(
        f"{args.encoder}, {len(images)} Flickr8k test images, batch {args.batch_size}, "
        f"torch {torch.__version__}, best of {args.repeats}"
    )
    print(f"{'threads':>7}  {'runtime':<32}{'images/s':>10}{'x eager':>9}{'max |diff|':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_encoder(encoder, Path(tmp) / "encoder.onnx")
        for threads in args.threads:
            found = runtimes(encoder, onnx_path, batches[0], threads, not args.no_compile)
            best = dict.fromkeys(found, float("inf"))
            with torch.inference_mode():
                reference = encoder(batches[0])
                diffs = {
                    name: (fn(batches[0]) - reference).abs().max().item()
                    for name, fn in found.items()
                }
                for _ in range(args.repeats):
                    for name, fn in found.items():
                        best[name] = min(best[name], timed(lambda fn=fn: [fn(b) for b in batches]))
            for name in found:
                rate = len(images) / best[name]
                ratio = best["torch eager"] / best[name]
                print(f"{threads:>7}  {name:<32}{rate:>10.1f}{ratio:>9.2f}{diffs[name]:>12.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
