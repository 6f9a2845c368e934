"""`rnncap train`: train a captioning model on cached encoder features (CPU, CUDA or torchrun)."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import MISSING, fields
from pathlib import Path

from rnncap.cli._common import UsageError, flag_error
from rnncap.data.datasets import list_formats

NAME = "train"
HELP = "train a captioning model (rnn | lstm | attn) on cached encoder features"
EXTRA = "train"  # torch (rnncap.cli._extras)

_HELP = {
    "data": "data set root folder",
    "format": "data set format: " + " | ".join(list_formats()),
    "extra_data": "more photo data sets for training, 'FORMAT:DIR[@WEIGHT],...': their train "
    "splits join --data's, each image drawn WEIGHT times an epoch (dev stays --data's)",
    "text_data": "caption text without photos (.jsonl with a 'captions' list per line, or one "
    "caption per line): its words join the vocabulary, its captions the batches (--text-ratio)",
    "text_ratio": "caption groups of --text-data added per photo of each batch, shown with an "
    "all-zero feature grid (cross-entropy only)",
    "features": "feature cache folder written by `rnncap features`",
    "encoder": "encoder whose cached features are used",
    "out": "run folder: config.json, metrics.jsonl, curves.png, last/, best/",
    "objective": "xe: cross-entropy with teacher forcing | scst: self-critical sequence training "
    "on CIDEr-D (needs --init)",
    "init": "start from this model folder or run folder (weights and vocabulary); "
    "the sizes, cell type and encoder then come from it",
    "grow_vocab": "with --init: the model's vocabulary grows by the words of this run's data seen "
    "--min-count times (new words start untrained); without it they become <unk>",
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
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{_HELP[f.name]} (default: {default})",
            )
        else:
            parser.add_argument(
                flag,
                type=type(default),
                default=None,
                metavar=f.name.upper(),
                help=f"{_HELP[f.name]} (default: {default})",
            )


def resolve_config(args: argparse.Namespace):
    """Defaults <- --config file <- flags given on the command line. TrainConfig checks the
    result; a value it refuses is reported under its flag (or the --config file holding it)."""
    from rnncap.engine.train_config import TrainConfig
    from rnncap.utils.config import ConfigError

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
    flags = [f.name for f in fields(TrainConfig) if getattr(args, f.name, None) is not None]
    values.update({name: getattr(args, name) for name in flags})
    try:
        return TrainConfig.from_dict(values)
    except ConfigError as e:  # a value TrainConfig refuses, as a flag or in the --config file
        if args.config is not None and e.field not in flags:
            raise UsageError(f"--config {args.config}: {e}") from None
        raise flag_error(e) from None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _mismatch_message(error) -> str:
    flag = _flag(error.option)
    saved = str(error.saved).lower() if isinstance(error.saved, bool) else error.saved
    given = str(error.given).lower() if isinstance(error.given, bool) else error.given
    return (
        f"--resume: {error.run} was trained with {flag} {saved}, not {given} (repeat the run's "
        f"options, e.g. --config {error.run}/config.json, or start a new run with another --out)"
    )


def run(args: argparse.Namespace) -> int:
    from rnncap.engine.resume import ResumeMismatchError
    from rnncap.engine.train import train

    cfg = resolve_config(args)
    if not cfg.data:
        raise UsageError("--data is required (the data set root folder)")
    if not Path(cfg.data).exists():
        raise UsageError(f"--data {cfg.data}: no such folder")
    try:
        best = train(cfg)
    except ResumeMismatchError as e:  # the library names the option, the flag is said here
        raise UsageError(_mismatch_message(e)) from None
    if os.environ.get("RANK", "0") == "0":  # under torchrun only the first process reports
        summary = {"best_epoch": best.get("epoch"), "dev_cider": best.get("dev_cider")}
        print(json.dumps({**summary, "run": cfg.out}))
    return 0
