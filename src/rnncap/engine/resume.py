"""Reading a run's last checkpoint to resume it: every file and the run's model shape are checked
before training touches anything, so a damaged or mismatched run fails with one line."""

from __future__ import annotations

import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from rnncap.data.vocab import Vocabulary
from rnncap.engine.train_config import TrainConfig
from rnncap.models.captioning_rnn import CaptionerConfig
from rnncap.models.folder import (
    ModelNotFoundError,
    read_captioner_config,
    read_config,
    read_vocabulary,
    read_weights,
)
from rnncap.utils.errors import RnncapError
from rnncap.utils.io import InvalidFileError, first_line

TRAIN_STATE = "train_state.pt"
STATE_KEYS = ("optimizer", "scheduler", "epoch", "history", "best", "rng")
# Options that shape the model: a resumed run must keep them.
MODEL_OPTIONS = ("encoder", "cell_type", "wordvec_dim", "hidden_dim", "deep_output")


class ResumeMismatchError(RnncapError, ValueError):
    """The options given differ from those the run was trained with, in `option`."""

    def __init__(self, run: Path, option: str, saved: object, given: object):
        super().__init__(f"{run} was trained with {option}={saved!r}, not {given!r}")
        self.run, self.option, self.saved, self.given = run, option, saved, given


class RunExistsError(RnncapError, FileExistsError):
    """A fresh run's folder already holds a run's checkpoints (a FileExistsError too)."""


@dataclass
class Checkpoint:
    """What `train` needs to continue a run: model config, vocabulary, weights, training state."""

    config: CaptionerConfig
    vocab: Vocabulary
    weights: dict[str, torch.Tensor]
    state: dict  # optimizer, scheduler, epoch, history, best, rng


def read_train_state(path: Path) -> dict:
    """train_state.pt (tensors and plain data, `weights_only`), or InvalidFileError."""
    try:
        state = torch.load(path, weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as error:
        reason = first_line(error).split(". ")[0]  # torch adds paragraphs of advice
        raise InvalidFileError(path, f"truncated or not a training state ({reason})") from None
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise InvalidFileError(path, f"not a training state (no {', '.join(missing)})")
    return state


def checkpoint_epoch(folder: Path, resumable: bool) -> int | None:
    """The epoch of a complete checkpoint folder (every file readable and consistent), else None.
    resumable: last/ (its train_state.pt); otherwise best/ (the epoch in its config.json)."""
    try:
        config = read_captioner_config(folder)
        read_vocabulary(folder, config)
        read_weights(folder, config)
        if resumable:
            return int(read_train_state(folder / TRAIN_STATE)["epoch"])
        return int(read_config(folder).get("info", {}).get("metrics", {}).get("epoch", 0))
    except (InvalidFileError, OSError, TypeError, ValueError, AttributeError):
        return None


def leftovers(run: Path, name: str) -> list[Path]:
    """What interrupted swaps of run/NAME leave: .NAME.old and .NAME.XXXXXXXX folders."""
    return sorted(p for p in run.glob(f".{name}.*") if p.is_dir() and not p.is_symlink())


def recover_checkpoint(run: Path, name: str = "last") -> Path | None:
    """Put the newest complete checkpoint back at run/NAME, whatever state a swap of it was left
    in (`rnncap.utils.io.atomic_write`: killed between its renames, or its old copy not yet
    removed), and remove the other copies; returns run/NAME, or None when none is complete."""
    target = run / name
    candidates = ([target] if target.is_dir() else []) + leftovers(run, name)
    complete = []
    for folder in candidates:
        epoch = checkpoint_epoch(folder, resumable=name == "last")
        if epoch is not None:
            complete.append((epoch, folder == target, folder))
    if not complete:
        return None
    _, _, newest = max(complete, key=lambda c: (c[0], c[1]))
    if newest != target:
        if target.exists():  # older or damaged: set aside under a name the next pass removes
            os.replace(target, run / f".{name}.replaced-{os.getpid()}")
        os.replace(newest, target)
    for folder in leftovers(run, name):
        shutil.rmtree(folder, ignore_errors=True)
    return target


def prepare_run_folder(out: Path, resume: bool, dry_run: bool = False) -> None:
    """A fresh run needs a folder without checkpoints; a resumed one gets its newest complete
    checkpoints back in place (an interrupted swap of last/ or best/ is undone)."""
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        for name in ("last", "best"):
            recover_checkpoint(out, name)
        return
    held = [out / n for n in ("last", "best") if (out / n).exists()]
    held += leftovers(out, "last") + leftovers(out, "best")
    if held and not dry_run:
        raise RunExistsError(
            f"{out} already holds a run ({held[0].name}; use --resume to continue it, "
            "or another --out)"
        )


def load_checkpoint(cfg: TrainConfig) -> Checkpoint:
    """Read and check `cfg.out`/last: its files, and that `cfg` keeps the model's shape."""
    run = Path(cfg.out)
    last = run / "last"
    if not (last / TRAIN_STATE).is_file():
        raise ModelNotFoundError(f"--resume: no checkpoint in {last}")
    config = read_captioner_config(last)
    # With --init the model's sizes come from the init model, not from these options.
    for option in ("encoder",) if cfg.init else MODEL_OPTIONS:
        if getattr(config, option) != getattr(cfg, option):
            raise ResumeMismatchError(run, option, getattr(config, option), getattr(cfg, option))
    vocab = read_vocabulary(last, config)
    weights = read_weights(last, config)
    return Checkpoint(config, vocab, weights, read_train_state(last / TRAIN_STATE))
