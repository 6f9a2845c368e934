"""The captioning loss: softmax cross-entropy summed over time and averaged over the batch.

Same definition as cs231n's `temporal_softmax_loss` (and `rnncap.numpy_ref`).
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
