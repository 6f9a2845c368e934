"""The captioning loss: temporal_softmax_loss against cs231n's loops, and the attention penalty."""

from __future__ import annotations

import math

import pytest
import torch

from rnncap.nn import attention_penalty, captioning_loss, temporal_softmax_loss


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


def test_matches_numpy_reference_with_gradient():
    layers = pytest.importorskip("rnncap.numpy_ref.layers")
    import numpy as np

    rng = np.random.default_rng(1)
    N, T, V = 3, 5, 7
    x, y = rng.standard_normal((N, T, V)), rng.integers(0, V, (N, T))
    y[1, 3:] = 0
    loss_ref, dx_ref = layers.temporal_softmax_loss(x, y, y != 0)
    xt = torch.tensor(x, requires_grad=True)
    loss = temporal_softmax_loss(xt, torch.tensor(y), ignore_index=0)
    loss.backward()
    assert abs(loss.item() - loss_ref) < 1e-10
    np.testing.assert_allclose(xt.grad.numpy(), dx_ref, rtol=0, atol=1e-10)


def test_captioning_loss_adds_the_attention_penalty():
    torch.manual_seed(0)
    N, T, V, P = 3, 4, 6, 2
    logits = torch.randn(N, T, V, dtype=torch.float64)
    targets = torch.randint(1, V, (N, T))
    targets[0, 2:] = 0  # padding
    # Attention that gives each of the P cells exactly one unit over the non-pad words...
    weights = torch.full((N, T, P), 0.5, dtype=torch.float64)
    weights[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7], [0.3, 0.7]])
    weights[1:, :, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    weights[1:, :, 1] = torch.tensor([0.0, 0.5, 0.25, 0.25])
    assert float(attention_penalty(weights, targets)) == pytest.approx(0.0, abs=1e-12)
    # ... and attention piled on one cell: (1 - 0)^2 + (1 - T)^2 per caption of T words.
    piled = torch.zeros(N, T, P, dtype=torch.float64)
    piled[..., 0] = 1.0
    targets_full = torch.randint(1, V, (N, T))
    assert float(attention_penalty(piled, targets_full)) == pytest.approx(1.0 + (1 - T) ** 2)
    base = temporal_softmax_loss(logits, targets_full)
    torch.testing.assert_close(captioning_loss(logits, targets_full, piled, 0.0), base)
    torch.testing.assert_close(
        captioning_loss(logits, targets_full, piled, 0.5), base + 0.5 * (1.0 + (1 - T) ** 2)
    )
