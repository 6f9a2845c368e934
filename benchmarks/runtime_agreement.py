"""Raw photos captioned by today's default path and by the torch-free runtime, same model and the
model's own decoding settings: how many captions are identical, and the photos/s of each.

The default path is what `rnncap.load(MODEL)` runs on a CPU without an encoder.onnx in the
folder: the torch decoder with the encoder exported from the torch weights into the user cache.
The runtime is `rnncap.load(MODEL, backend="runtime")`: the folder's own encoder.onnx in ONNX
Runtime and the NumPy decoder. Both caption the same files with `Captioner.caption_files`,
taking turns every two batches, after a warm-up call each. Targets: identical captions on
>= 99.5% of each set, runtime/default >= 1.

Usage: python benchmarks/runtime_agreement.py --model FOLDER [--limit 1000] [--data DIR]
           [--coco DIR]
FOLDER needs an encoder.onnx: the bundled default has one (--model default); else `rnncap export
default OUT`, or scripts/bundle_model.py.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch

from _data import add_coco_argument, add_data_argument, coco_dev_images, missing, test_images
from _timing import timed
from rnncap.decode.captioner import load
from rnncap.models.onnx_encoder import use_backend


def default_path(model: str):
    """The torch decoder with the user cache's ONNX encoder (the folder's own is not used)."""
    captioner = load(model, device="cpu", backend="torch")
    use_backend(captioner.model, "onnx")  # no folder: exported into (or read from) the cache
    return captioner


def caption_both(paths: dict, photos: list[Path], batch_size: int) -> tuple[dict, dict]:
    """{path: captions}, {path: photos/s}: the two paths take turns, two batches each, so a
    change in the machine's load falls on both alike."""
    texts = {name: [] for name in paths}
    seconds = dict.fromkeys(paths, 0.0)
    chunk = 2 * batch_size
    for turn, start in enumerate(range(0, len(photos), chunk)):
        for name in list(paths)[:: 1 if turn % 2 == 0 else -1]:
            files = photos[start : start + chunk]
            seconds[name] += timed(partial(caption, paths[name], files, batch_size, texts[name]))
    return texts, {name: len(photos) / seconds[name] for name in paths}


def caption(captioner, files: list[Path], batch_size: int, out: list[str]) -> None:
    out.extend(c.text for c in captioner.caption_files(files, False, batch_size))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(parser)
    add_coco_argument(parser)
    parser.add_argument("--model", required=True, help="model folder holding an encoder.onnx")
    parser.add_argument("--limit", type=int, default=1000, help="Flickr8k test photos at most")
    parser.add_argument("--batch-size", type=int, default=32, help="photos per batch")
    args = parser.parse_args()
    sets = {}
    if not missing(args.data):
        sets["Flickr8k test"] = test_images(args.data, args.limit)
    if not missing(args.coco):
        sets["COCO dev"] = coco_dev_images(args.coco)
    if not sets:
        return 0
    paths = {"default": default_path(args.model), "runtime": load(args.model, backend="runtime")}
    warm_up = next(iter(sets.values()))[:4]
    for captioner in paths.values():
        list(captioner.caption_files(warm_up, progress=False))
    rows, differ = [], []
    for name, photos in sets.items():
        texts, rates = caption_both(paths, photos, args.batch_size)
        pairs = zip(photos, texts["default"], texts["runtime"], strict=True)
        differ += [(name, photo.name, a, b) for photo, a, b in pairs if a != b]
        same = len(photos) - sum(1 for d in differ if d[0] == name)
        ratio = rates["runtime"] / rates["default"]
        rows.append(
            f"| {name} | {len(photos)} | {same} | {same / len(photos):.1%} | "
            f"{rates['default']:.2f} | {rates['runtime']:.2f} | {ratio:.2f} |"
        )
    options = paths["runtime"].options
    print(
        f"model {args.model}: beam {options.beam_size}, guidance {options.guidance}; "
        f"{torch.get_num_threads()} torch threads, ONNX Runtime threads "
        f"{paths['runtime'].encoder.threads or 'one per core'}"
    )
    print("| photos | n | identical | % | default photos/s | runtime photos/s | runtime/default |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    for name, photo, a, b in differ:
        print(f"  {name} {photo}: default {a!r} | runtime {b!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
