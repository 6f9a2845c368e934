"""temporal_softmax_loss against the cs231n definition written out with loops."""

from __future__ import annotations

import math

import torch

from rnncap.nn import temporal_softmax_loss


def test_matches_loops_and_ignores_padding():
    torch.manual_seed(0)
    N, T, V = 3, 4, 5
    logits = torch.randn(N, T, V, dtype=torch.double)
    targets = torch.randint(1, V, (N, T))
    targets[0, 2:] = 0  # padding
    expected = 0.0
    for n in range(N):
        for t in range(T):
            if targets[n, t] != 0:
                row = logits[n, t].tolist()
                expected -= row[targets[n, t]] - math.log(sum(math.exp(v) for v in row))
    loss = temporal_softmax_loss(logits, targets, ignore_index=0)
    assert abs(loss.item() - expected / N) < 1e-12
