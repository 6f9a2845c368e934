"""`rnncap export`: write a model folder whose image encoder and decoder step are also ONNX graphs
(encoder.onnx, decoder_step.onnx).

The graphs sit beside config.json, vocab.json and model.safetensors; `--backend onnx` (the CPU
default) then runs them instead of exporting them into the user cache. Before the folder is
published, a few images go through both encoders and a few decoding steps through both decoders,
and the largest differences are checked.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from rnncap.cli._common import UsageError, fail

NAME = "export"
HELP = "export a model's image encoder and decoder step to ONNX (for ONNX Runtime on a CPU)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="'default' (the bundled model), a model folder, a run folder or a model.safetensors",
    )
    parser.add_argument(
        "out",
        metavar="OUT",
        help="folder to write: new or empty (a copy of the model plus encoder.onnx and "
        "decoder_step.onnx), or the model folder itself (the two graphs added in place)",
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
        help="largest difference accepted, torch vs ONNX Runtime, in features and in the "
        "decoder's log-probabilities (default: 1e-4)",
    )


def run(args: argparse.Namespace) -> int:
    from rnncap.models.folder import resolve_model_dir

    try:
        folder = resolve_model_dir(args.model)
    except FileNotFoundError as error:
        return fail(f"MODEL: {error}")
    out = Path(args.out)
    in_place = out.exists() and out.resolve() == folder.resolve()
    if out.exists() and not in_place and (not out.is_dir() or any(out.iterdir())):
        return fail(f"OUT {out}: exists and is not an empty folder (nor the model folder)")
    if args.atol <= 0:
        return fail("--atol must be positive")
    try:
        images = _check_images(args.check_images)
        report = _export(folder, out, in_place, images, args.atol)
    except UsageError as error:
        return fail(str(error))
    print(report)
    return 0


def _check_images(paths: list[str] | None):
    """The check's PIL images: the given files, or four seeded random ones."""
    from rnncap.data.images import ImageError, open_image

    if paths:
        try:
            return [open_image(p) for p in paths]
        except ImageError as error:
            raise UsageError(f"--check-images: {error}") from None
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) for _ in range(4)]


def _export(folder: Path, out: Path, in_place: bool, photos, atol: float) -> str:
    """Export, check, then publish atomically; returns the report (a line per graph)."""
    import torch

    from rnncap.models.folder import CONFIG, VOCAB, WEIGHTS, load_model
    from rnncap.models.onnx_decoder import STEP_FILE, OnnxDecoder, export_step
    from rnncap.models.onnx_encoder import (
        ENCODER_FILE,
        OnnxEncoder,
        export_encoder,
        max_feature_difference,
    )
    from rnncap.utils.io import atomic_write

    model, _ = load_model(folder, "cpu")
    encoder = model.encoder
    name = model.config.encoder
    images = torch.stack([encoder.preprocess(p) for p in photos])  # (N, 3, S, S)
    outcome = {}

    def check(what: str, difference: float) -> None:
        if not difference <= atol:
            raise UsageError(
                f"the exported {what} differs from torch by {difference:.1e} "
                f"(more than --atol {atol:g}); nothing written"
            )

    def write_encoder(path: Path) -> None:
        graph = export_encoder(encoder, path)
        difference = max_feature_difference(encoder, OnnxEncoder(graph, threads=1), images)
        check(f"{name} encoder", difference)
        outcome["encoder"] = (difference, graph.stat().st_size)

    def write_step(path: Path) -> None:
        graph = export_step(model, path)
        difference = _step_difference(model, OnnxDecoder(model, graph, threads=1), images)
        check("decoder step", difference)
        outcome["step"] = (difference, graph.stat().st_size)

    def write_folder(target: Path) -> None:
        write_encoder(target / ENCODER_FILE)
        write_step(target / STEP_FILE)
        for file in (CONFIG, VOCAB, WEIGHTS):
            shutil.copy2(folder / file, target / file)

    if in_place:
        target = folder
        with tempfile.TemporaryDirectory(dir=folder) as scratch:  # both checked before either lands
            write_encoder(Path(scratch) / ENCODER_FILE)
            write_step(Path(scratch) / STEP_FILE)
            for file in (ENCODER_FILE, STEP_FILE):
                os.replace(Path(scratch) / file, folder / file)
    else:
        target = atomic_write(out, write_folder, folder=True)
    (e_diff, e_size), (s_diff, s_size) = outcome["encoder"], outcome["step"]
    return (
        f"{target / ENCODER_FILE}: {name} encoder, {e_size / 1e6:.1f} MB; largest feature "
        f"difference from torch on {len(images)} images {e_diff:.1e}\n"
        f"{target / STEP_FILE}: decoder step, {s_size / 1e6:.1f} MB; largest log-probability "
        f"difference from torch over {STEPS} greedy steps {s_diff:.1e} (both accepted up to "
        f"{atol:g})"
    )


STEPS = 5  # greedy decoding steps compared, torch step vs ONNX Runtime step


def _step_difference(model, decoder, images) -> float:
    """Largest |log-probability| difference over a few greedy steps from the images' features."""
    import torch

    worst = 0.0
    with torch.inference_mode():
        state = model.init_state(model.encode(images))
        tokens = torch.full((len(images),), model.config.start_id, dtype=torch.long)
        for _ in range(STEPS):
            want, next_state, _ = model.step(tokens, state)
            got, _, _ = decoder.step(tokens, state)
            worst = max(worst, float((want - got).abs().max()))
            state, tokens = next_state, want.argmax(1)
    return worst
