"""Vanilla (tanh) RNN in NumPy: one step and a whole sequence, forward and backward.

`next_h = tanh(x Wx + prev_h Wh + b)`; caches hold what the backward pass needs.
"""

from __future__ import annotations

import numpy as np

from rnncap.numpy_ref._shapes import check_shapes


def rnn_step_forward(
    x: np.ndarray, prev_h: np.ndarray, Wx: np.ndarray, Wh: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, tuple]:
    """One RNN step.

    x (N, D), prev_h (N, H), Wx (D, H), Wh (H, H), b (H,) -> next_h (N, H), cache.
    """
    check_shapes(
        ("Wx", Wx, "D H"),
        ("Wh", Wh, "H H"),
        ("b", b, "H"),
        ("x", x, "N D"),
        ("prev_h", prev_h, "N H"),
    )
    next_h = np.tanh(x @ Wx + prev_h @ Wh + b)  # (N, H)
    return next_h, (x, prev_h, Wx, Wh, next_h)


def rnn_step_backward(dnext_h: np.ndarray, cache: tuple) -> tuple[np.ndarray, ...]:
    """Backward of `rnn_step_forward`: dnext_h (N, H) -> (dx, dprev_h, dWx, dWh, db)."""
    x, prev_h, Wx, Wh, next_h = cache
    check_shapes(("dnext_h", dnext_h, "N H"), ("next_h", next_h, "N H"))
    da = dnext_h * (1.0 - next_h**2)  # (N, H), through tanh
    dx = da @ Wx.T  # (N, D)
    dprev_h = da @ Wh.T  # (N, H)
    dWx = x.T @ da  # (D, H)
    dWh = prev_h.T @ da  # (H, H)
    db = da.sum(axis=0)  # (H,)
    return dx, dprev_h, dWx, dWh, db


def rnn_forward(
    x: np.ndarray, h0: np.ndarray, Wx: np.ndarray, Wh: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, list]:
    """Run the RNN over a sequence.

    x (N, T, D), h0 (N, H), Wx (D, H), Wh (H, H), b (H,) -> h (N, T, H), cache.
    """
    sizes = check_shapes(
        ("Wx", Wx, "D H"),
        ("Wh", Wh, "H H"),
        ("b", b, "H"),
        ("x", x, "N T D"),
        ("h0", h0, "N H"),
    )
    N, T, H = sizes["N"], sizes["T"], sizes["H"]
    h = np.empty((N, T, H), dtype=np.result_type(x, h0, Wx))
    caches = []
    prev_h = h0
    for t in range(T):
        prev_h, step_cache = rnn_step_forward(x[:, t], prev_h, Wx, Wh, b)
        h[:, t] = prev_h
        caches.append(step_cache)
    return h, caches


def rnn_backward(dh: np.ndarray, cache: list) -> tuple[np.ndarray, ...]:
    """Backward of `rnn_forward`: dh (N, T, H) upstream of every h -> (dx, dh0, dWx, dWh, db)."""
    x0, h0, Wx, Wh, _ = cache[0]
    T = len(cache)
    check_shapes(("h0", h0, "N H"), ("dh", dh, f"N {T} H"))
    N, D = x0.shape
    dx = np.empty((N, T, D), dtype=dh.dtype)
    dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros(Wh.shape[0], dtype=Wh.dtype)
    dprev_h = np.zeros_like(h0)
    for t in reversed(range(T)):
        dx[:, t], dprev_h, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t] + dprev_h, cache[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dprev_h, dWx, dWh, db
