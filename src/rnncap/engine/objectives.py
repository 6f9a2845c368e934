"""The training objectives: each computes one batch's loss (and numbers to report) from explicit
arguments; `OBJECTIVES` maps `TrainConfig.objective` to them and `rnncap.engine.loop` steps on it.

An objective is called as `objective(share, **arguments)`: `share` is this process's part of one
global batch, the keyword arguments are fixed for an epoch (bound with `functools.partial`);
it returns a `Step`. Self-critical training's parts are in `rnncap.engine.scst`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rnncap.engine.loop import BatchShare, Step
from rnncap.engine.scst import scst_loss
from rnncap.engine.sources import add_text
from rnncap.engine.splits import CaptionSplit, collate
from rnncap.nn.loss import captioning_loss


def batch_loss(net, features, captions, counts, attention_reg: float) -> torch.Tensor:
    """Teacher-forced `captioning_loss` of one batch; `net` may be the DDP-wrapped model."""
    logits, weights = net(features, captions[:, :-1], counts)  # (N, T, V), (N, T, P) | None
    return captioning_loss(logits, captions[:, 1:], weights, attention_reg, ignore_index=0)


def xe_loss(
    share: BatchShare,
    *,
    net: torch.nn.Module,
    split: CaptionSplit,
    pad_id: int,
    swap: torch.Tensor,
    device: torch.device,
    attention_reg: float = 0.0,
    amp: bool = False,
    text: Callable[[int], list] | None = None,
) -> Step:
    """Cross-entropy with teacher forcing on every caption of the share's images.

    net: the model or its DDP wrapper (trained in train mode: dropout on); swap (V,): token ids
    of a mirror image's captions (`left_right_swap`); amp: bfloat16 autocast; text: given the
    global batch's image count, this process's caption groups without photos, each joining the
    batch as one all-zero feature row (`add_text`).
    """
    net.train()
    features, captions, counts = collate(split, share.images, pad_id, share.mirror, swap)
    if text is not None:
        groups = text(share.batch_images)
        features, captions, counts = add_text(features, captions, counts, groups, pad_id)
    features, captions = features.to(device).float(), captions.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        loss = batch_loss(net, features, captions, counts.to(device), attention_reg)
    return Step(loss, captions.shape[0])


OBJECTIVES: dict[str, Callable[..., Step]] = {"xe": xe_loss, "scst": scst_loss}
