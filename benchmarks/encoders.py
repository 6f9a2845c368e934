"""Images/s of each EfficientNet-Lite encoder, torch eager and ONNX Runtime, with the ratio to
Lite0 measured in the same run: the cost side of choosing the default encoder.

Every encoder sees the same preprocessed Flickr8k test images (224 px); rounds are interleaved
across encoders and the best of --repeats counts.

Usage: python benchmarks/encoders.py [--images 64] [--threads 1 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from _data import add_data_argument, missing, test_images
from _timing import timed
from rnncap.data.images import open_image
from rnncap.models.encoders import build_encoder
from rnncap.models.onnx_encoder import OnnxEncoder, export_encoder

NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(parser)
    parser.add_argument("--images", type=int, default=64, help="test images to encode")
    parser.add_argument("--batch-size", type=int, default=16, help="images per call")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the best counts")
    args = parser.parse_args()
    if missing(args.data):
        return 0
    encoders = {name: build_encoder(name) for name in NAMES}
    paths = test_images(args.data, args.images)
    images = torch.stack([encoders[NAMES[0]].preprocess(open_image(p)) for p in paths])
    batches = list(images.split(args.batch_size))  # same preprocessing for every Lite variant
    print(f"{len(images)} Flickr8k test images, batch {args.batch_size}, best of {args.repeats}")
    print(
        f"{'threads':>7}  {'encoder':<20}{'params':>8}{'torch img/s':>13}{'onnx img/s':>12}"
        f"{'onnx vs Lite0':>15}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = {n: export_encoder(e, Path(tmp) / f"{n}.onnx") for n, e in encoders.items()}
        for threads in args.threads:
            torch.set_num_threads(threads)
            runs = {}
            for name, encoder in encoders.items():
                runs[name, "torch"] = encoder
                runs[name, "onnx"] = OnnxEncoder(paths[name], threads=threads)
            best = dict.fromkeys(runs, float("inf"))
            with torch.inference_mode():
                for _ in range(args.repeats):
                    for key, fn in runs.items():
                        best[key] = min(best[key], timed(lambda fn=fn: [fn(b) for b in batches]))
            for name, encoder in encoders.items():
                params = sum(p.numel() for p in encoder.parameters()) / 1e6
                torch_rate = len(images) / best[name, "torch"]
                onnx_rate = len(images) / best[name, "onnx"]
                ratio = best[NAMES[0], "onnx"] / best[name, "onnx"]
                print(
                    f"{threads:>7}  {name:<20}{params:>7.1f}M{torch_rate:>13.1f}"
                    f"{onnx_rate:>12.1f}{ratio:>15.2f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
