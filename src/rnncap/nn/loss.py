"""The captioning loss: softmax cross-entropy summed over time and averaged over the batch,
plus Show, Attend and Tell's doubly stochastic attention penalty for attention models.

`temporal_softmax_loss` has the same definition as cs231n's (and `rnncap.numpy_ref`'s).
"""

from __future__ import annotations

import torch
from torch import Tensor


def temporal_softmax_loss(logits: Tensor, targets: Tensor, ignore_index: int = 0) -> Tensor:
    """Loss for logits (N, T, V) and targets (N, T); positions equal to ignore_index are skipped.

    Summed over time and averaged over N (not over the number of words), as in cs231n.
    """
    N, T, V = logits.shape
    log_probs = torch.log_softmax(logits.reshape(N * T, V), dim=1)  # (N*T, V)
    flat = targets.reshape(N * T)
    mask = flat != ignore_index
    picked = log_probs.gather(1, flat.clamp(0, V - 1).unsqueeze(1)).squeeze(1)  # (N*T,)
    return -(picked * mask).sum() / N


def attention_penalty(weights: Tensor, targets: Tensor, ignore_index: int = 0) -> Tensor:
    """Doubly stochastic penalty: each grid cell should receive about one unit of attention.

    weights (N, T, P), targets (N, T); padded positions do not count. Returns
    mean over N of sum over P of (1 - attention received)^2.
    """
    mask = (targets != ignore_index).to(weights.dtype)[:, :, None]  # (N, T, 1)
    coverage = (weights * mask).sum(1)  # (N, P)
    return ((1.0 - coverage) ** 2).sum(1).mean()


def captioning_loss(
    logits: Tensor,
    targets: Tensor,
    weights: Tensor | None = None,
    attention_reg: float = 0.0,
    ignore_index: int = 0,
) -> Tensor:
    """The training loss of a captioner: temporal softmax loss on logits (N, T, V) for targets
    (N, T), plus `attention_reg` times the attention penalty when weights (N, T, P) are given.

    Half-precision logits (autocast) are summed in float32.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    loss = temporal_softmax_loss(logits, targets, ignore_index)
    if weights is not None and attention_reg > 0:
        loss = loss + attention_reg * attention_penalty(weights, targets, ignore_index)
    return loss
