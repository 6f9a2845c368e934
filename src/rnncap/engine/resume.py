"""Reading a run's last checkpoint to resume it: every file and the run's model shape are checked
before training touches anything, so a damaged or mismatched run fails with one line."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from rnncap.data.vocab import Vocabulary
from rnncap.engine.train_config import TrainConfig
from rnncap.models.captioner import CaptionerConfig
from rnncap.models.folder import read_captioner_config, read_vocabulary, read_weights
from rnncap.utils.io import InvalidFileError, first_line

TRAIN_STATE = "train_state.pt"
STATE_KEYS = ("optimizer", "scheduler", "epoch", "history", "best", "rng")
# Options that shape the model: a resumed run must keep them.
MODEL_OPTIONS = ("encoder", "cell_type", "wordvec_dim", "hidden_dim", "deep_output")


class ResumeMismatchError(ValueError):
    """The options given differ from those the run was trained with, in `option`."""

    def __init__(self, run: Path, option: str, saved: object, given: object):
        super().__init__(f"{run} was trained with {option}={saved!r}, not {given!r}")
        self.run, self.option, self.saved, self.given = run, option, saved, given


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


def load_checkpoint(cfg: TrainConfig) -> Checkpoint:
    """Read and check `cfg.out`/last: its files, and that `cfg` keeps the model's shape."""
    run = Path(cfg.out)
    last = run / "last"
    if not (last / TRAIN_STATE).is_file():
        raise FileNotFoundError(f"--resume: no checkpoint in {last}")
    config = read_captioner_config(last)
    # With --init the model's sizes come from the init model, not from these options.
    for option in ("encoder",) if cfg.init else MODEL_OPTIONS:
        if getattr(config, option) != getattr(cfg, option):
            raise ResumeMismatchError(run, option, getattr(config, option), getattr(cfg, option))
    vocab = read_vocabulary(last, config)
    weights = read_weights(last, config)
    return Checkpoint(config, vocab, weights, read_train_state(last / TRAIN_STATE))
