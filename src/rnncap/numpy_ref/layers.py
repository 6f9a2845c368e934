"""The non-recurrent layers of the NumPy captioner: affine, word embedding, temporal affine and
the temporal softmax loss (summed over time, averaged over the batch)."""

from __future__ import annotations

import numpy as np

from rnncap.numpy_ref._shapes import check_shapes


def affine_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple]:
    """x (N, D), w (D, M), b (M,) -> out (N, M), cache."""
    check_shapes(
        ("w", w, "D M"),
        ("b", b, "M"),
        ("x", x, "N D"),
    )
    return x @ w + b, (x, w)


def affine_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, ...]:
    """Backward of `affine_forward`: dout (N, M) -> (dx, dw, db)."""
    x, w = cache
    check_shapes(
        ("w", w, "D M"),
        ("x", x, "N D"),
        ("dout", dout, "N M"),
    )
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)


def word_embedding_forward(x: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Look up word vectors: x (N, T) integer ids in [0, V), W (V, D) -> out (N, T, D), cache."""
    sizes = check_shapes(("x", x, "N T"), ("W", W, "V D"))
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"x: expected integer word ids, got dtype {x.dtype}")
    if x.size and (x.min() < 0 or x.max() >= sizes["V"]):
        raise ValueError(f"x: word ids must lie in [0, {sizes['V']}), got {x.min()}..{x.max()}")
    return W[x], (x, W.shape)


def word_embedding_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """Backward of `word_embedding_forward`: dout (N, T, D) -> dW (V, D)."""
    x, W_shape = cache
    check_shapes(("x", x, "N T"), ("dout", dout, f"N T {W_shape[1]}"))
    dW = np.zeros(W_shape, dtype=dout.dtype)
    np.add.at(dW, x, dout)  # repeated ids accumulate
    return dW


def temporal_affine_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, tuple]:
    """The same affine map at every time step: x (N, T, D), w (D, M), b (M,) -> out (N, T, M)."""
    check_shapes(
        ("w", w, "D M"),
        ("b", b, "M"),
        ("x", x, "N T D"),
    )
    return x @ w + b, (x, w)


def temporal_affine_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, ...]:
    """Backward of `temporal_affine_forward`: dout (N, T, M) -> (dx, dw, db)."""
    x, w = cache
    check_shapes(
        ("w", w, "D M"),
        ("x", x, "N T D"),
        ("dout", dout, "N T M"),
    )
    dw = np.einsum("ntd,ntm->dm", x, dout)  # (D, M)
    return dout @ w.T, dw, dout.sum(axis=(0, 1))


def temporal_softmax_loss(
    x: np.ndarray, y: np.ndarray, mask: np.ndarray
) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy at every time step where mask is true.

    x (N, T, V) scores, y (N, T) targets in [0, V), mask (N, T) bool
    -> loss (summed over time, averaged over N), dx (N, T, V).
    """
    sizes = check_shapes(("x", x, "N T V"), ("y", y, "N T"), ("mask", mask, "N T"))
    N, V = sizes["N"], sizes["V"]
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y: expected integer targets, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= V):
        raise ValueError(f"y: targets must lie in [0, {V}), got {y.min()}..{y.max()}")
    mask = mask.astype(bool)
    shifted = x - x.max(axis=2, keepdims=True)  # (N, T, V)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))
    target_log_probs = np.take_along_axis(log_probs, y[:, :, None], axis=2)[:, :, 0]  # (N, T)
    loss = -target_log_probs[mask].sum() / N
    dx = np.exp(log_probs)  # (N, T, V) softmax
    np.put_along_axis(dx, y[:, :, None], np.take_along_axis(dx, y[:, :, None], axis=2) - 1, axis=2)
    dx *= mask[:, :, None] / N
    return float(loss), dx
