"""`rnncap export`: write a model folder whose image encoder is also an ONNX graph (encoder.onnx).

The graph sits beside config.json, vocab.json and model.safetensors, its SHA-256 recorded in
config.json; `--backend onnx` (the CPU default) and the torch-free runtime then run it instead of
exporting one into the user cache. Before the folder is published, a few images go through both
encoders and the largest feature difference is checked (`rnncap.models.encoder_export`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rnncap.cli._common import UsageError

NAME = "export"
HELP = "export a model's image encoder to ONNX into a model folder (for ONNX Runtime on a CPU)"
EXTRA = "train"  # torch and onnx (rnncap.cli._extras)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="'default' (the bundled model), a model folder, a run folder or a model.safetensors",
    )
    parser.add_argument(
        "out",
        metavar="OUT",
        help="folder to write: new or empty (a copy of the model plus encoder.onnx), or the "
        "model folder itself (encoder.onnx added in place)",
    )
    parser.add_argument(
        "--check-images",
        nargs="+",
        metavar="IMAGE",
        default=None,
        help="images run through both encoders before publishing (default: 4 seeded random images)",
    )
    parser.add_argument(
        "--atol",
        type=float,
        default=1e-4,
        help="largest feature difference accepted, torch vs ONNX Runtime (default: 1e-4)",
    )


def run(args: argparse.Namespace) -> int:
    from rnncap.models.encoder_export import export_into
    from rnncap.models.folder import read_captioner_config, resolve_model_dir

    folder = resolve_model_dir(args.model)
    read_captioner_config(folder)  # a damaged config, or a model without an rnncap encoder
    out = Path(args.out)
    in_place = out.exists() and out.resolve() == folder.resolve()
    if out.exists() and not in_place and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"OUT {out}: exists and is not an empty folder (nor the model folder)")
    if args.atol <= 0:
        raise UsageError("--atol must be positive")
    images = None
    if args.check_images:
        from rnncap.data.images import open_image

        images = [open_image(p) for p in args.check_images]  # an ImageError names the file
    print(export_into(folder, out, images, args.atol))
    return 0
