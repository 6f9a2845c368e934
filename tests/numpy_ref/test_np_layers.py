"""NumPy affine, word embedding, temporal affine and temporal softmax loss against centred
differences and torch autograd in float64."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnncap.numpy_ref import (
    affine_backward,
    affine_forward,
    eval_numerical_gradient,
    rel_error,
    temporal_affine_backward,
    temporal_affine_forward,
    temporal_softmax_loss,
    word_embedding_backward,
    word_embedding_forward,
)
from rnncap.numpy_ref.checks import LAYER_TOLERANCE, LOSS_TOLERANCE, check_layer

CLOSE = dict(rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("N,T", [(3, 4), (1, 1)])
def test_layers_numerical_gradients(N, T):
    rng = np.random.default_rng(N + T)
    D, M, V = 5, 4, 7
    results = check_layer(
        "affine",
        affine_forward,
        affine_backward,
        {
            "x": rng.standard_normal((N, D)),
            "w": rng.standard_normal((D, M)),
            "b": rng.standard_normal(M),
        },
        ["x", "w", "b"],
        1,
        rng,
    )
    results += check_layer(
        "temporal_affine",
        temporal_affine_forward,
        temporal_affine_backward,
        {
            "x": rng.standard_normal((N, T, D)),
            "w": rng.standard_normal((D, M)),
            "b": rng.standard_normal(M),
        },
        ["x", "w", "b"],
        1,
        rng,
    )
    results += check_layer(
        "word_embedding",
        word_embedding_forward,
        word_embedding_backward,
        {"x": rng.integers(0, V, size=(N, T)), "W": rng.standard_normal((V, D))},
        ["W"],
        1,
        rng,
    )
    assert all(r.error < LAYER_TOLERANCE for r in results), results


def test_temporal_affine_and_embedding_match_torch():
    rng = np.random.default_rng(0)
    N, T, D, M, V = 3, 4, 5, 6, 7
    x_np, w_np, b_np = (rng.standard_normal(s) for s in [(N, T, D), (D, M), (M,)])
    ids = np.array([[1, 2, 2, 0], [6, 6, 6, 6], [3, 1, 0, 0]])  # repeated ids accumulate
    W_np, dout, dembed = (
        rng.standard_normal((V, D)),
        rng.standard_normal((N, T, M)),
        rng.standard_normal((N, T, D)),
    )

    out, cache = temporal_affine_forward(x_np, w_np, b_np)
    dx, dw, db = temporal_affine_backward(dout, cache)
    x, w, b = (torch.tensor(a, requires_grad=True) for a in (x_np, w_np, b_np))
    out_torch = F.linear(x, w.T, b)
    (out_torch * torch.from_numpy(dout)).sum().backward()
    np.testing.assert_allclose(out, out_torch.detach().numpy(), **CLOSE)
    for ours, theirs in zip((dx, dw, db), (x, w, b), strict=True):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), **CLOSE)

    vectors, cache = word_embedding_forward(ids, W_np)
    dW = word_embedding_backward(dembed, cache)
    W = torch.tensor(W_np, requires_grad=True)
    vectors_torch = F.embedding(torch.from_numpy(ids), W)
    (vectors_torch * torch.from_numpy(dembed)).sum().backward()
    np.testing.assert_allclose(vectors, vectors_torch.detach().numpy(), **CLOSE)
    np.testing.assert_allclose(dW, W.grad.numpy(), **CLOSE)


def torch_temporal_loss(x: torch.Tensor, y: np.ndarray, mask: np.ndarray) -> torch.Tensor:
    """Cross-entropy summed over unmasked steps, averaged over N, with torch's own cross_entropy."""
    N, T, V = x.shape
    per_step = F.cross_entropy(
        x.reshape(N * T, V), torch.from_numpy(y).reshape(-1), reduction="none"
    ).reshape(N, T)
    return (per_step * torch.from_numpy(mask.astype(np.float64))).sum() / N


@pytest.mark.parametrize("N,T", [(4, 5), (1, 5), (4, 1), (1, 1)])
def test_temporal_softmax_loss_matches_torch(N, T):
    rng = np.random.default_rng(N * 10 + T)
    V = 6
    x_np = rng.standard_normal((N, T, V)) * 3
    y = rng.integers(0, V, size=(N, T))
    mask = rng.random((N, T)) > 0.3
    mask[0] = False  # a row with every step masked
    loss, dx = temporal_softmax_loss(x_np, y, mask)

    x = torch.tensor(x_np, requires_grad=True)
    loss_torch = torch_temporal_loss(x, y, mask)
    loss_torch.backward()
    np.testing.assert_allclose(loss, loss_torch.item(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, x.grad.numpy(), **CLOSE)
    assert not dx[0].any(), "a masked row gets no gradient"

    numeric = eval_numerical_gradient(
        lambda z: temporal_softmax_loss(z, y, mask)[0], x_np, h=1e-3, points=4
    )
    assert rel_error(numeric, dx) < LOSS_TOLERANCE


def test_temporal_softmax_loss_all_masked_and_large_scores():
    x = np.full((2, 3, 4), 1e4)
    x[..., 1] = -1e4  # huge logits: log-sum-exp must not overflow
    y = np.ones((2, 3), dtype=np.int64)
    loss, dx = temporal_softmax_loss(x, y, np.zeros((2, 3), dtype=bool))
    assert loss == 0.0 and not dx.any()
    loss, dx = temporal_softmax_loss(x, y, np.ones((2, 3), dtype=bool))
    assert np.isfinite(loss) and np.isfinite(dx).all()
    np.testing.assert_allclose(loss, 3 * (2e4 + np.log(3)))  # per row: 3 steps of -log p(y)


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda: temporal_softmax_loss(
                np.zeros((2, 3, 4)), np.zeros((2, 4), dtype=int), np.ones((2, 3))
            ),
            r"y: expected shape \(N, T\) = \(2, 3\), got \(2, 4\)",
        ),
        (
            lambda: temporal_softmax_loss(
                np.zeros((2, 3, 4)), np.zeros((2, 3), dtype=int), np.ones(3)
            ),
            r"mask: expected shape \(N, T\), got \(3,\)",
        ),
        (
            lambda: temporal_softmax_loss(np.zeros((2, 3, 4)), np.full((2, 3), 4), np.ones((2, 3))),
            r"y: targets must lie in \[0, 4\)",
        ),
        (
            lambda: word_embedding_forward(np.zeros((2, 3), dtype=int), np.zeros(5)),
            r"W: expected shape \(V, D\), got \(5,\)",
        ),
        (
            lambda: word_embedding_forward(np.zeros((2, 3)), np.zeros((5, 2))),
            r"x: expected integer word ids",
        ),
        (
            lambda: temporal_affine_forward(np.zeros((2, 3, 4)), np.zeros((5, 6)), np.zeros(6)),
            r"x: expected shape \(N, T, D\) = \(2, 3, 5\), got \(2, 3, 4\)",
        ),
        (
            lambda: affine_forward(np.zeros((2, 5)), np.zeros((5, 6)), np.zeros(5)),
            r"b: expected shape \(M,\) = \(6,\), got \(5,\)",
        ),
    ],
)
def test_layer_wrong_shapes_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()
