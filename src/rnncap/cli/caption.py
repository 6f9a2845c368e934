"""`rnncap caption`: caption image files and folders with a saved model (the bundled default).

Prints `path<TAB>caption` (or JSON lines); a bad image is reported on stderr and skipped.
Large jobs: `--out FILE` writes JSON lines as they are made and `--resume` continues the file;
`--shard I/N` takes a stable 1/N of the input, so N processes split a collection.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from functools import partial
from pathlib import Path

from rnncap.cli._common import UsageError, add_backend_argument, check_backend, fail
from rnncap.cli._extras import require

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
        help="'default' (the bundled model), a model folder (also one written by `rnncap "
        "convert-show-tell`), a training run folder (its best model) or a model.safetensors "
        "file (default: default)",
    )
    parser.add_argument(
        "--beam",
        type=int,
        default=None,
        help="beam size (default: the model's decoding setting, 3 unless set; 1 = greedy)",
    )
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
    _add_job_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """--out, --resume and --shard: large jobs that survive a kill and split across processes."""
    parser.add_argument(
        "--out",
        metavar="FILE",
        default=None,
        help="write JSON lines into FILE (flushed line by line, so a killed job keeps what is "
        "done) instead of printing; the settings go to FILE.settings.json; '{shard}' in FILE "
        "becomes the shard's number I",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue --out FILE: skip the images it already holds (a torn last line is "
        "redone); refused when the model, beam, max length or shard differ",
    )
    parser.add_argument(
        "--shard",
        metavar="I/N",
        default=None,
        help="caption only shard I of N (0 <= I < N): every N-th image of the input sorted by "
        "path, so N processes split it with no coordination; 'auto': RANK/WORLD_SIZE "
        "(torchrun) or the Slurm array task",
    )


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
        require("train")  # the heatmaps are drawn by torch and matplotlib
        out = Path(args.attention_out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--attention-out {out}: exists and is not a folder")
    if args.resume and args.out is None:
        raise UsageError("--resume needs --out FILE (the file to continue)")


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


def _print(record: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record), flush=True)
    else:
        print(f"{record['image']}\t{record['caption']}", flush=True)


def _record(image: str, caption: str, score: float | None) -> dict:
    if score is not None and not math.isfinite(score):
        score = None  # NaN and Infinity are not JSON
    return {"image": image, "caption": caption, "score": score}


def run(args: argparse.Namespace) -> int:
    from rnncap.data.images import find_images
    from rnncap.utils.device import resolve_device
    from rnncap.utils.jobs import parse_shard, take_shard

    _check_args(args)
    shard = parse_shard(args.shard) if args.shard is not None else None
    device = resolve_device(args.device)
    check_backend(args.backend, device)
    paths, problems = find_images(args.paths)
    for problem in problems:
        fail(problem)
    if not paths:
        return 1  # every path was reported above
    if shard is not None:
        paths = take_shard(paths, *shard)
    output = _open_output(args, shard)
    emit = output.write if output is not None else partial(_print, as_json=args.json)
    todo = [p for p in paths if output is None or str(p) not in output.done]
    try:
        failed = _run_model(args, todo, device, emit) if todo else 0
    finally:
        if output is not None:
            output.close()
            torn = " (its torn last line redone)" if output.dropped_torn_line else ""
            print(
                f"rnncap caption: {output.written} captioned, {len(paths) - len(todo)} already in "
                f"{output.path}{torn}",
                file=sys.stderr,
            )
    return 1 if failed or problems else 0


def _open_output(args: argparse.Namespace, shard: tuple[int, int] | None):
    """The --out file (None: print), its settings checked against the file's when resuming."""
    from rnncap.utils.jobs import JobError, JsonLinesOutput

    if args.out is None:
        return None
    path = args.out
    if "{shard}" in path:
        if shard is None:
            raise JobError(f"--out {path}: '{{shard}}' needs --shard")
        path = path.replace("{shard}", str(shard[0]))
    settings = {
        "model": args.model,
        "beam": args.beam,
        "max_length": args.max_length,
        "shard": None if shard is None else f"{shard[0]}/{shard[1]}",
    }
    return JsonLinesOutput(path, settings, args.resume)


def _run_model(args: argparse.Namespace, paths: list[Path], device, emit) -> int:
    """Caption with a saved rnncap model; returns the number of images that failed."""
    from rnncap.decode.captioner import Failed, load

    captioner = load(args.model, device, backend=args.backend)
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
        emit(_record(result.image, result.text, result.score))
    return failed
