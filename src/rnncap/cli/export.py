"""`rnncap export`: write a model folder whose image encoder is also an ONNX graph (encoder.onnx).

The graph sits beside config.json, vocab.json and model.safetensors; `--backend onnx` (the CPU
default) then runs it instead of exporting one into the user cache. Before the folder is
published, a few images go through both encoders and the largest feature difference is checked.
"""

from __future__ import annotations

import argparse
import json
import shutil
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
    from rnncap.models.folder import read_captioner_config, resolve_model_dir

    folder = resolve_model_dir(args.model)
    read_captioner_config(folder)  # a damaged config, or a model without an rnncap encoder
    out = Path(args.out)
    in_place = out.exists() and out.resolve() == folder.resolve()
    if out.exists() and not in_place and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"OUT {out}: exists and is not an empty folder (nor the model folder)")
    if args.atol <= 0:
        raise UsageError("--atol must be positive")
    images = _check_images(args.check_images)
    print(_export(folder, out, in_place, images, args.atol))
    return 0


def _check_images(paths: list[str] | None):
    """The check's PIL images: the given files, or four seeded random ones."""
    from rnncap.data.images import open_image

    if paths:
        return [open_image(p) for p in paths]  # an ImageError names the file
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) for _ in range(4)]


def _export(folder: Path, out: Path, in_place: bool, photos, atol: float) -> str:
    """Export, check, then publish atomically; returns the one-line report."""
    import torch

    from rnncap.models.encoders import build_encoder
    from rnncap.models.folder import CONFIG, VOCAB, WEIGHTS, read_config
    from rnncap.models.fusion import LM_FOLDERS
    from rnncap.models.onnx_check import RECORD, file_digest
    from rnncap.models.onnx_encoder import (
        ENCODER_FILE,
        OnnxEncoder,
        export_encoder,
        max_feature_difference,
    )
    from rnncap.utils.io import atomic_write, atomic_write_text

    config = read_config(folder)
    name = config["captioner"]["encoder"]
    encoder = build_encoder(name)
    images = torch.stack([encoder.preprocess(p) for p in photos])  # (N, 3, S, S)
    outcome = {}

    def write(target: Path) -> None:
        graph = export_encoder(encoder, target / ENCODER_FILE if not in_place else target)
        difference = max_feature_difference(encoder, OnnxEncoder(graph, threads=1), images)
        if not difference <= atol:
            raise UsageError(
                f"the exported {name} encoder differs from torch by {difference:.1e} "
                f"(more than --atol {atol:g}); nothing written"
            )
        outcome.update(difference=difference, size=graph.stat().st_size)
        config[RECORD] = {
            "sha256": file_digest(graph),
            "exported_with": f"torch {torch.__version__}",
        }
        if not in_place:
            for file in (VOCAB, WEIGHTS):
                shutil.copy2(folder / file, target / file)
            for lm in LM_FOLDERS:  # the language models fused at decoding time
                if (folder / lm).is_dir():
                    shutil.copytree(folder / lm, target / lm)
            (target / CONFIG).write_text(json.dumps(config, indent=2) + "\n")

    if in_place:  # the graph, then the digest that vouches for it (a kill between: re-export)
        target = atomic_write(folder / ENCODER_FILE, write)
        atomic_write_text(folder / CONFIG, json.dumps(config, indent=2) + "\n")
    else:
        target = atomic_write(out, write, folder=True) / ENCODER_FILE
    return (
        f"{target}: {name} encoder, {outcome['size'] / 1e6:.1f} MB; largest feature difference "
        f"from torch on {len(images)} images {outcome['difference']:.1e} (accepted up to {atol:g})"
    )
