"""`rnncap train`: train a captioning model on cached encoder features (CPU, CUDA or torchrun)."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import MISSING, fields
from pathlib import Path

from rnncap.cli._common import UsageError, device_usage_error, fail
from rnncap.data.datasets import list_formats

NAME = "train"
HELP = "train a captioning model (rnn | lstm | attn) on cached encoder features"

_HELP = {
    "data": "data set root folder",
    "format": "data set format: " + " | ".join(list_formats()),
    "features": "feature cache folder written by `rnncap features`",
    "encoder": "encoder whose cached features are used",
    "out": "run folder: config.json, metrics.jsonl, curves.png, last/, best/",
    "objective": "xe: cross-entropy with teacher forcing | scst: self-critical sequence training "
    "on CIDEr-D (needs --init)",
    "init": "start from this model folder or run folder (weights and vocabulary); "
    "the sizes, cell type and encoder then come from it",
    "samples_per_image": "scst: captions sampled per image, each rewarded against the others' mean",
    "reward_end": "scst: an end word closes every reference and every finished sample, so CIDEr-D "
    "also rewards how a caption ends (no 'a man rides a')",
    "mirror": "the chance (0 to 1) that a training image is seen mirrored left to right in an "
    "epoch: its features from `rnncap features --mirrored`, 'left' and 'right' swapped in its "
    "captions (scst: in its references)",
    "cell_type": "recurrent cell: rnn | lstm | attn",
    "wordvec_dim": "word embedding size",
    "hidden_dim": "recurrent state size",
    "dropout": "dropout on word vectors and before the vocabulary projection",
    "deep_output": "logits from tanh(word vector + Lh h + Lz context), as in Show, Attend and Tell",
    "min_count": "words seen fewer times in the train split become <unk>",
    "max_caption_words": "training captions are truncated to this many words",
    "max_length": "most words emitted when decoding",
    "epochs": "number of epochs",
    "batch_images": "images per batch (every caption of each image is used)",
    "lr": "peak learning rate (AdamW)",
    "weight_decay": "AdamW weight decay (matrices only)",
    "warmup_steps": "linear warm-up steps before the cosine decay",
    "min_lr_ratio": "the cosine schedule ends at lr * this",
    "clip": "gradient-norm clipping threshold",
    "attention_reg": "doubly stochastic attention penalty (attn only; 0 turns it off)",
    "patience": "early stopping: epochs without a dev CIDEr gain",
    "eval_images": "dev images captioned (greedy) for CIDEr each epoch; 0 = all",
    "seed": "random seed (initialisation and shuffling)",
    "device": "auto | cpu | cuda (under torchrun: one process per GPU, or gloo on CPU)",
    "amp": "bfloat16 autocast on CUDA",
    "tf32": "TensorFloat-32 (10-bit mantissa) for CUDA float32 matrix products; off: full float32",
    "deterministic": "deterministic CUDA kernels, so that a CUDA run (and its resume) repeats "
    "bit for bit; somewhat slower",
    "resume": "continue the run in --out from its last checkpoint",
    "dry_run": "one batch and a tiny evaluation: a quick check of the whole pipeline",
    "limit_images": "use only the first N images of each split (0 = all)",
    "progress": "show progress bars",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rnncap.engine.train_config import TrainConfig

    parser.add_argument(
        "--config", type=Path, help="JSON file of options (flags given override it)"
    )
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{_HELP[f.name]} (default: {default})")  # fmt: skip
        else:
            parser.add_argument(flag, type=type(default), default=None, metavar=f.name.upper(),
                                help=f"{_HELP[f.name]} (default: {default})")  # fmt: skip


def resolve_config(args: argparse.Namespace):
    """Defaults <- --config file <- flags given on the command line."""
    from rnncap.engine.train_config import TrainConfig

    values: dict = {}
    if args.config is not None:
        from rnncap.utils.io import InvalidFileError, read_json_file

        try:
            values = read_json_file(args.config)
        except InvalidFileError as e:
            raise UsageError(f"--config {e}") from None
        except OSError as e:
            raise UsageError(f"--config {args.config}: {e.strerror or e}") from None
        if not isinstance(values, dict):
            raise UsageError(f"--config {args.config}: expected a JSON object")
        values = values.get("train", values)  # a run's config.json works too
    for f in fields(TrainConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    try:
        cfg = TrainConfig.from_dict(values)
    except (TypeError, ValueError) as e:
        where = f"--config {args.config}" if args.config is not None else "options"
        raise UsageError(f"{where}: {e}") from None
    from rnncap.models.captioner import list_cell_types

    cells = list_cell_types()
    if cfg.cell_type not in cells:
        names = f"{', '.join(cells[:-1])} or {cells[-1]}"
        raise UsageError(f"--cell-type must be {names}, got {cfg.cell_type!r}")
    _check_objective(cfg)
    return cfg


def _check_objective(cfg) -> None:
    if cfg.objective not in ("xe", "scst"):
        raise UsageError(f"--objective must be xe or scst, got {cfg.objective!r}")
    if cfg.objective == "scst" and not cfg.init:
        raise UsageError("--objective scst needs --init (a cross-entropy model or run folder)")
    if cfg.samples_per_image < 2:
        raise UsageError(f"--samples-per-image must be at least 2, got {cfg.samples_per_image}")
    if not 0 <= cfg.mirror <= 1:
        raise UsageError(f"--mirror must be between 0 and 1, got {cfg.mirror}")


def _mismatch_message(error) -> str:
    flag = "--" + error.option.replace("_", "-")
    saved = str(error.saved).lower() if isinstance(error.saved, bool) else error.saved
    given = str(error.given).lower() if isinstance(error.given, bool) else error.given
    return (
        f"--resume: {error.run} was trained with {flag} {saved}, not {given} (repeat the run's "
        f"options, e.g. --config {error.run}/config.json, or start a new run with another --out)"
    )


def run(args: argparse.Namespace) -> int:
    from rnncap.engine.resume import ResumeMismatchError
    from rnncap.engine.train import train
    from rnncap.utils.device import DeviceError

    try:
        cfg = resolve_config(args)
        if not cfg.data:
            raise UsageError("--data is required (the data set root folder)")
        if not Path(cfg.data).exists():
            raise UsageError(f"--data {cfg.data}: no such folder")
        best = train(cfg)
    except UsageError as e:
        return fail(str(e))
    except DeviceError as e:
        return fail(str(device_usage_error(e)))
    except ResumeMismatchError as e:
        return fail(_mismatch_message(e))
    except (FileNotFoundError, FileExistsError, KeyError, ValueError) as e:
        return fail(str(e).strip("'\""))
    if os.environ.get("RANK", "0") == "0":  # under torchrun only the first process reports
        summary = {"best_epoch": best.get("epoch"), "dev_cider": best.get("dev_cider")}
        print(json.dumps({**summary, "run": cfg.out}))
    return 0
