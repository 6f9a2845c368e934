"""The one training epoch: every objective (`rnncap.engine.objectives`) runs through the same
step sequence (zero_grad, backward, clip, optimiser step, schedule step) and the same record.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm


@dataclass(frozen=True)
class BatchShare:
    """This process's part of one global batch of train images."""

    images: list[int]  # rows of the train split
    mirror: torch.Tensor  # (B,) bool: each image shown mirrored
    batch_images: int  # images in the global batch (every process's share together)


@dataclass
class Step:
    """One batch's result: the loss to minimise and what the epoch's record averages."""

    loss: torch.Tensor  # scalar, with gradients
    weight: int  # the batch's weight in the epoch's train_loss (caption rows; 1 for scst)
    stats: dict[str, float] = field(default_factory=dict)  # averaged into train_<name>


def train_epoch(
    objective: Callable[[BatchShare], Step],
    batches: Sequence[torch.Tensor],
    mirrors: Sequence[torch.Tensor],
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    parameters: Iterable[torch.nn.Parameter],
    clip: float,
    rank: int = 0,
    world: int = 1,
    desc: str = "",
    progress: bool = True,
) -> dict:
    """One optimiser step per global batch of image rows `batches` (mirrors: (B,) bool each).

    Process `rank` of `world` takes every world-th image of each batch from position rank.
    `parameters` are clipped to a total gradient norm of `clip`.
    Returns {"train_loss", "train_<stat>" for each of the steps' stats, "lr"}: train_loss is
    the steps' losses averaged with their weights, a stat the mean over the steps.
    """
    parameters = list(parameters)
    total, weight, stats = 0.0, 0, {}
    bar = tqdm(
        zip(batches, mirrors, strict=True),
        total=len(batches),
        desc=desc,
        unit="batch",
        disable=not progress,
        file=sys.stderr,
    )
    for batch, mirror in bar:
        step = objective(BatchShare(batch[rank::world].tolist(), mirror[rank::world], len(batch)))
        optimizer.zero_grad(set_to_none=True)
        step.loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, clip)
        optimizer.step()
        scheduler.step()
        total += float(step.loss.detach()) * step.weight
        weight += step.weight
        for name, value in step.stats.items():
            stats.setdefault(name, []).append(value)
        shown = {name: f"{np.mean(values):.3f}" for name, values in stats.items()}
        bar.set_postfix(
            loss=f"{total / weight:.3f}", **shown, lr=f"{scheduler.get_last_lr()[0]:.2e}"
        )
    record = {"train_loss": total / max(weight, 1)}
    record.update({f"train_{name}": float(np.mean(values)) for name, values in stats.items()})
    record["lr"] = scheduler.get_last_lr()[0]
    return record
