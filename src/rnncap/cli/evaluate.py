"""`rnncap evaluate`: caption a split and score it (BLEU-1..4, METEOR, ROUGE-L, CIDEr).

Captioning runs without torch too (the runtime); the scores need pycocoevalcap, from the train
extra: without it, --json FILE gets the predictions and the command says what is missing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rnncap.cli._common import UsageError, add_backend_argument, check_backend, flag_error
from rnncap.data.datasets import list_formats

NAME = "evaluate"
HELP = "caption a data set split and score it with the COCO caption metrics"
SCORER = "pycocoevalcap"  # the module the scores need (the train extra, rnncap.cli._extras)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="default | model folder | run folder")
    parser.add_argument("--data", required=True, help="data set root folder")
    parser.add_argument(
        "--format",
        default="flickr8k",
        choices=list_formats(),
        help="data set format (default: flickr8k)",
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=["train", "dev", "test"],
        help="split to caption (default: test)",
    )
    parser.add_argument(
        "--beam",
        type=int,
        default=None,
        help="beam size; 1 = greedy (default: the model's, else 3)",
    )
    parser.add_argument(
        "--length-penalty",
        type=float,
        default=None,
        help="rank finished beams by score / length**a "
        "(default: the model's setting, 0 unless set)",
    )
    parser.add_argument(
        "--features",
        default=None,
        help="feature cache to read and extend (default: temporary; without torch none: the "
        "files are captioned as by `rnncap caption`)",
    )
    parser.add_argument("--batch-size", type=int, default=100, help="images decoded at once")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="image-decoding processes (default: the cores the model's threads "
        "leave free, at most 8)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    add_backend_argument(parser)
    parser.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="write predictions and scores to this JSON file (without the train extra: the "
        "predictions, scores null)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from rnncap.cli._common import fail
    from rnncap.cli._extras import missing_extra
    from rnncap.engine.evaluate import EvalConfig, evaluate, format_table
    from rnncap.utils.config import ConfigError
    from rnncap.utils.device import resolve_device

    scores = _scorer_installed()
    if not scores and args.json is None:  # nothing to show for the work: say so before it
        raise ModuleNotFoundError(f"No module named {SCORER!r}", name=SCORER)
    check_backend(args.backend, resolve_device(args.device))  # --backend torch without torch
    try:
        cfg = EvalConfig(
            model=args.model,
            data=args.data,
            format=args.format,
            split=args.split,
            beam=args.beam,
            length_penalty=args.length_penalty,
            features=args.features,
            batch_size=args.batch_size,
            workers=args.workers,
            device=args.device,
            backend=args.backend,
            limit=args.limit,
            progress=not args.quiet,
            score=scores,
        )
    except ConfigError as e:  # every option of EvalConfig is the flag of its name
        raise flag_error(e) from None
    if not Path(args.data).is_dir():
        raise UsageError(f"--data {args.data}: no such folder")
    if args.json is not None and not args.json.parent.is_dir():
        raise UsageError(f"--json {args.json}: folder {args.json.parent} does not exist")
    result = evaluate(cfg)
    if args.json is not None:
        from rnncap.utils.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    beam = result["config"]["beam"]
    print(f"{args.split} split, {result['images']} images, beam {beam}, model {args.model}")
    if not scores:
        missing = missing_extra(ModuleNotFoundError(name=SCORER), "rnncap evaluate")
        return fail(f"{missing}; scores not computed, the predictions are in {args.json}")
    print(format_table(result["scores"], result["cider_stderr"]))
    return 0


def _scorer_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(SCORER) is not None
    except ImportError:  # an import hook that hides it
        return False
