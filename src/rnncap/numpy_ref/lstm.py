"""LSTM in NumPy with gate order i, f, o, g: one step and a whole sequence, forward and backward.

`a = x Wx + prev_h Wh + b`; i, f, o = sigmoid, g = tanh; `c = f*prev_c + i*g`; `h = o*tanh(c)`.
"""

from __future__ import annotations

import numpy as np

from rnncap.numpy_ref._shapes import check_shapes


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def lstm_gates_forward(a: np.ndarray, prev_c: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The LSTM cell update from pre-activations: a (N, 4H), prev_c (N, H) -> next_h, next_c, cache.

    Shared by the plain and the attention LSTM, which differ only in how `a` is formed.
    """
    H = prev_c.shape[1]
    i = sigmoid(a[:, :H])  # (N, H) input gate
    f = sigmoid(a[:, H : 2 * H])  # (N, H) forget gate
    o = sigmoid(a[:, 2 * H : 3 * H])  # (N, H) output gate
    g = np.tanh(a[:, 3 * H :])  # (N, H) candidate
    next_c = f * prev_c + i * g  # (N, H)
    tanh_c = np.tanh(next_c)
    next_h = o * tanh_c  # (N, H)
    return next_h, next_c, (i, f, o, g, prev_c, tanh_c)


def lstm_gates_backward(
    dnext_h: np.ndarray, dnext_c: np.ndarray, cache: tuple
) -> tuple[np.ndarray, np.ndarray]:
    """Backward of `lstm_gates_forward` -> (da (N, 4H), dprev_c (N, H))."""
    i, f, o, g, prev_c, tanh_c = cache
    dc = dnext_c + dnext_h * o * (1.0 - tanh_c**2)  # (N, H), both paths into next_c
    da = np.concatenate(
        [
            dc * g * i * (1.0 - i),  # di
            dc * prev_c * f * (1.0 - f),  # df
            dnext_h * tanh_c * o * (1.0 - o),  # do
            dc * i * (1.0 - g**2),  # dg
        ],
        axis=1,
    )  # (N, 4H)
    return da, dc * f


def lstm_step_forward(
    x: np.ndarray,
    prev_h: np.ndarray,
    prev_c: np.ndarray,
    Wx: np.ndarray,
    Wh: np.ndarray,
    b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, tuple]:
    """One LSTM step.

    x (N, D), prev_h (N, H), prev_c (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,)
    -> next_h (N, H), next_c (N, H), cache.
    """
    check_shapes(
        ("Wx", Wx, "D 4H"),
        ("Wh", Wh, "H 4H"),
        ("b", b, "4H"),
        ("x", x, "N D"),
        ("prev_h", prev_h, "N H"),
        ("prev_c", prev_c, "N H"),
    )
    a = x @ Wx + prev_h @ Wh + b  # (N, 4H)
    next_h, next_c, gates = lstm_gates_forward(a, prev_c)
    return next_h, next_c, (x, prev_h, Wx, Wh, gates)


def lstm_step_backward(
    dnext_h: np.ndarray, dnext_c: np.ndarray, cache: tuple
) -> tuple[np.ndarray, ...]:
    """Backward of `lstm_step_forward`: dnext_h, dnext_c (N, H)
    -> (dx, dprev_h, dprev_c, dWx, dWh, db)."""
    x, prev_h, Wx, Wh, gates = cache
    check_shapes(
        ("prev_h", prev_h, "N H"), ("dnext_h", dnext_h, "N H"), ("dnext_c", dnext_c, "N H")
    )
    da, dprev_c = lstm_gates_backward(dnext_h, dnext_c, gates)
    return da @ Wx.T, da @ Wh.T, dprev_c, x.T @ da, prev_h.T @ da, da.sum(axis=0)


def lstm_forward(
    x: np.ndarray, h0: np.ndarray, Wx: np.ndarray, Wh: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, list]:
    """Run the LSTM over a sequence from h0 and c0 = 0.

    x (N, T, D), h0 (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,) -> h (N, T, H), cache.
    """
    sizes = check_shapes(
        ("Wx", Wx, "D 4H"),
        ("Wh", Wh, "H 4H"),
        ("b", b, "4H"),
        ("x", x, "N T D"),
        ("h0", h0, "N H"),
    )
    N, T, H = sizes["N"], sizes["T"], sizes["H"]
    h = np.empty((N, T, H), dtype=np.result_type(x, h0, Wx))
    prev_h, prev_c = h0, np.zeros_like(h0)
    caches = []
    for t in range(T):
        prev_h, prev_c, step_cache = lstm_step_forward(x[:, t], prev_h, prev_c, Wx, Wh, b)
        h[:, t] = prev_h
        caches.append(step_cache)
    return h, caches


def lstm_backward(dh: np.ndarray, cache: list) -> tuple[np.ndarray, ...]:
    """Backward of `lstm_forward`: dh (N, T, H) -> (dx, dh0, dWx, dWh, db)."""
    x0, h0, Wx, Wh, _ = cache[0]
    T = len(cache)
    check_shapes(("h0", h0, "N H"), ("dh", dh, f"N {T} H"))
    N, D = x0.shape
    dx = np.empty((N, T, D), dtype=dh.dtype)
    dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros(Wh.shape[1], dtype=Wh.dtype)
    dprev_h, dprev_c = np.zeros_like(h0), np.zeros_like(h0)
    for t in reversed(range(T)):
        dx[:, t], dprev_h, dprev_c, dWx_t, dWh_t, db_t = lstm_step_backward(
            dh[:, t] + dprev_h, dprev_c, cache[t]
        )
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dprev_h, dWx, dWh, db
