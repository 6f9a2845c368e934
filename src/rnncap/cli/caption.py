"""`rnncap caption`: caption image files and folders with a saved model (the bundled default).

Prints `path<TAB>caption` (or JSON lines); a bad image is reported on stderr and skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from rnncap.cli._common import (
    UsageError,
    add_backend_argument,
    check_backend,
    fail,
    resolve_device,
)

NAME = "caption"
HELP = "caption image files or folders (prints path<TAB>caption, or JSON lines with --json)"

PROGRESS_ABOVE = 5  # a progress bar on stderr for more images than this


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="image files, or folders searched recursively"
    )
    parser.add_argument(
        "--model",
        default="default",
        help="'default' (the bundled model), a model folder, a training run folder (its best "
        "model) or a model.safetensors file (default: default)",
    )
    parser.add_argument(
        "--beam", type=int, default=None,
        help="beam size (default: the model's decoding setting, 3 unless set; 1 = greedy)",
    )  # fmt: skip
    parser.add_argument(
        "--max-length", type=int, default=None, help="words per caption at most (default: model's)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print JSON lines {"image": ..., "caption": ..., "score": ...} instead of text',
    )
    parser.add_argument(
        "--attention-out",
        metavar="DIR",
        default=None,
        help="write one PNG per image into DIR: the photo with a heatmap per word (attn models)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)"
    )
    add_backend_argument(parser)
    parser.add_argument(
        "--batch-size", type=int, default=32, help="images per encoder/beam call (default: 32)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader processes decoding images (default: the cores the model's threads leave "
        "free, at most 8; 0 = in the main process)",
    )
    parser.add_argument(
        "--show-tell",
        nargs=3,
        metavar=("ENCODER_PKL", "DECODER_PKL", "VOCAB_PKL"),
        default=None,
        help="use the classic pretrained Show-and-Tell checkpoint instead of --model (greedy, "
        "as the original, unless --beam is given)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _check_args(args: argparse.Namespace) -> None:
    from rnncap.decode.beam import MAX_BEAM, MAX_LENGTH

    if args.beam is not None and not 1 <= args.beam <= MAX_BEAM:
        raise UsageError(f"--beam must be between 1 and {MAX_BEAM}")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.workers is not None and args.workers < 0:
        raise UsageError("--workers must be 0 or more")
    if args.max_length is not None and not 1 <= args.max_length <= MAX_LENGTH:
        raise UsageError(f"--max-length must be between 1 and {MAX_LENGTH}")
    if args.attention_out is not None:
        if args.show_tell is not None:
            raise UsageError("--attention-out: the Show-and-Tell model has no attention")
        out = Path(args.attention_out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--attention-out {out}: exists and is not a folder")


def _png_names(paths: list[Path]) -> list[str]:
    """One distinct PNG file name per image: its stem, numbered when two images share one."""
    names, used = [], set()
    for path in paths:
        name, n = f"{path.stem}.png", 1
        while name in used:
            n += 1
            name = f"{path.stem}-{n}.png"
        used.add(name)
        names.append(name)
    return names


def _print(image: str, caption: str, score: float | None, as_json: bool) -> None:
    if as_json:
        if score is not None and not math.isfinite(score):
            score = None  # NaN and Infinity are not JSON
        print(json.dumps({"image": image, "caption": caption, "score": score}), flush=True)
    else:
        print(f"{image}\t{caption}", flush=True)


def run(args: argparse.Namespace) -> int:
    from rnncap.data.images import find_images

    try:
        _check_args(args)
        device = resolve_device(args.device)
        if args.show_tell is None:  # the Show-and-Tell checkpoint always runs in torch
            check_backend(args.backend, device)
    except UsageError as error:
        return fail(str(error))
    paths, problems = find_images(args.paths)
    for problem in problems:
        fail(problem)
    if not paths:
        return 1  # every path was reported above
    try:
        if args.show_tell is not None:
            failed = _run_show_tell(args, paths, device)
        else:
            failed = _run_model(args, paths, device)
    except UsageError as error:
        return fail(str(error))
    return 1 if failed or problems else 0


def _run_model(args: argparse.Namespace, paths: list[Path], device) -> int:
    """Caption with a saved rnncap model; returns the number of images that failed."""
    from rnncap.decode.captioner import Failed, load

    try:
        captioner = load(args.model, device, backend=args.backend)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(f"--model: {error}") from None
    cell_type = captioner.config.cell_type
    out = Path(args.attention_out) if args.attention_out is not None else None
    if out is not None and cell_type != "attn":
        raise UsageError(f"--attention-out needs an attention model; this one is {cell_type!r}")
    png_names = dict(zip(map(str, paths), _png_names(paths), strict=True))
    failed = 0
    results = captioner.caption_files(
        paths,
        progress=len(paths) > PROGRESS_ABOVE and not args.quiet,
        batch_size=args.batch_size,
        workers=args.workers,
        beam=args.beam,
        max_length=args.max_length,
    )
    for result in results:
        if isinstance(result, Failed):
            fail(result.reason)
            failed += 1
            continue
        if out is not None and result.attention is not None:
            from rnncap.data.images import open_image
            from rnncap.utils.plotting import save_attention_png

            save_attention_png(
                out / png_names[result.image],
                open_image(result.image),
                result.words,
                result.attention,
                result.grid,
                caption=result.text,
            )
        _print(result.image, result.text, result.score, args.json)
    return failed


def _run_show_tell(args: argparse.Namespace, paths: list[Path], device) -> int:
    """Caption with the classic Show-and-Tell checkpoint; returns the number of failed images."""
    from rnncap.data.images import ImageError, open_image
    from rnncap.decode.beam import DecodeOptions
    from rnncap.decode.showtell import caption_images
    from rnncap.models import showtell

    for flag_path in args.show_tell:
        if not Path(flag_path).is_file():
            raise UsageError(f"--show-tell {flag_path}: no such file")
    try:
        captioner = showtell.load_show_tell(*args.show_tell, device=device)
    except (OSError, ValueError, RuntimeError) as error:
        raise UsageError(f"--show-tell: {error}") from None
    from tqdm import tqdm

    options = DecodeOptions(beam_size=args.beam or 1, max_length=args.max_length)
    failed = 0
    show = len(paths) > PROGRESS_ABOVE and not args.quiet
    with tqdm(total=len(paths), unit="img", disable=not show, desc="caption") as bar:
        for start in range(0, len(paths), args.batch_size):
            batch, names = [], []
            for path in paths[start : start + args.batch_size]:
                try:
                    batch.append(open_image(path))
                    names.append(str(path))
                except ImageError as error:
                    fail(str(error))
                    failed += 1
            captions = caption_images(captioner, batch, options) if batch else []
            for name, caption in zip(names, captions, strict=True):
                _print(name, caption, None, args.json)
            bar.update(len(paths[start : start + args.batch_size]))
    sys.stdout.flush()
    return failed
