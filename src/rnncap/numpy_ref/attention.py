"""Scaled dot-product attention over a feature grid, and the attention LSTM, in NumPy.

`weights = softmax(prev_h . A / sqrt(H))` over the P grid cells, `context = A . weights`; the
attention LSTM adds `context Wattn` to its gates and starts from `h0 = c0 = mean of A over P`.
"""

from __future__ import annotations

import numpy as np

from rnncap.numpy_ref._shapes import check_shapes
from rnncap.numpy_ref.lstm import lstm_gates_backward, lstm_gates_forward


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along `axis`."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def attention_forward(prev_h: np.ndarray, A: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Scaled dot-product attention.

    prev_h (N, H), A (N, H, P) -> context (N, H), weights (N, P), cache.
    """
    sizes = check_shapes(("prev_h", prev_h, "N H"), ("A", A, "N H P"))
    scale = 1.0 / np.sqrt(sizes["H"])
    scores = np.einsum("nh,nhp->np", prev_h, A) * scale  # (N, P)
    weights = softmax(scores, axis=1)  # (N, P)
    context = np.einsum("nhp,np->nh", A, weights)  # (N, H)
    return context, weights, (prev_h, A, weights, scale)


def attention_backward(dcontext: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Backward of `attention_forward`: dcontext (N, H) -> (dprev_h (N, H), dA (N, H, P))."""
    prev_h, A, weights, scale = cache
    check_shapes(("prev_h", prev_h, "N H"), ("dcontext", dcontext, "N H"))
    dweights = np.einsum("nh,nhp->np", dcontext, A)  # (N, P)
    dscores = weights * (dweights - (weights * dweights).sum(axis=1, keepdims=True))  # (N, P)
    dprev_h = np.einsum("np,nhp->nh", dscores, A) * scale  # (N, H)
    dA = dcontext[:, :, None] * weights[:, None, :]  # (N, H, P), through context
    dA += prev_h[:, :, None] * dscores[:, None, :] * scale  # through the scores
    return dprev_h, dA


def attention_lstm_step_forward(
    x: np.ndarray,
    prev_h: np.ndarray,
    prev_c: np.ndarray,
    A: np.ndarray,
    Wx: np.ndarray,
    Wh: np.ndarray,
    Wattn: np.ndarray,
    b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """One attention-LSTM step; the context is computed from prev_h.

    x (N, D), prev_h (N, H), prev_c (N, H), A (N, H, P), Wx (D, 4H), Wh (H, 4H), Wattn (H, 4H),
    b (4H,) -> next_h (N, H), next_c (N, H), weights (N, P), cache.
    """
    check_shapes(
        ("Wx", Wx, "D 4H"),
        ("Wh", Wh, "H 4H"),
        ("Wattn", Wattn, "H 4H"),
        ("b", b, "4H"),
        ("x", x, "N D"),
        ("prev_h", prev_h, "N H"),
        ("prev_c", prev_c, "N H"),
        ("A", A, "N H P"),
    )
    context, weights, attn_cache = attention_forward(prev_h, A)
    a = x @ Wx + prev_h @ Wh + context @ Wattn + b  # (N, 4H)
    next_h, next_c, gates = lstm_gates_forward(a, prev_c)
    return next_h, next_c, weights, (x, prev_h, context, Wx, Wh, Wattn, gates, attn_cache)


def attention_lstm_step_backward(
    dnext_h: np.ndarray, dnext_c: np.ndarray, cache: tuple
) -> tuple[np.ndarray, ...]:
    """Backward of `attention_lstm_step_forward`: dnext_h, dnext_c (N, H)
    -> (dx, dprev_h, dprev_c, dA, dWx, dWh, dWattn, db)."""
    x, prev_h, context, Wx, Wh, Wattn, gates, attn_cache = cache
    check_shapes(
        ("prev_h", prev_h, "N H"), ("dnext_h", dnext_h, "N H"), ("dnext_c", dnext_c, "N H")
    )
    da, dprev_c = lstm_gates_backward(dnext_h, dnext_c, gates)  # (N, 4H), (N, H)
    dprev_h_attn, dA = attention_backward(da @ Wattn.T, attn_cache)
    dprev_h = da @ Wh.T + dprev_h_attn
    return (
        da @ Wx.T,
        dprev_h,
        dprev_c,
        dA,
        x.T @ da,
        prev_h.T @ da,
        context.T @ da,
        da.sum(axis=0),
    )


def attention_lstm_forward(
    x: np.ndarray,
    A: np.ndarray,
    Wx: np.ndarray,
    Wh: np.ndarray,
    Wattn: np.ndarray,
    b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, list]:
    """Run the attention LSTM over a sequence from h0 = c0 = A.mean(axis=2).

    x (N, T, D), A (N, H, P), Wx (D, 4H), Wh (H, 4H), Wattn (H, 4H), b (4H,)
    -> h (N, T, H), weights (N, T, P), cache.
    """
    sizes = check_shapes(
        ("Wx", Wx, "D 4H"),
        ("Wh", Wh, "H 4H"),
        ("Wattn", Wattn, "H 4H"),
        ("b", b, "4H"),
        ("x", x, "N T D"),
        ("A", A, "N H P"),
    )
    N, T, H, P = sizes["N"], sizes["T"], sizes["H"], sizes["P"]
    dtype = np.result_type(x, A, Wx)
    h = np.empty((N, T, H), dtype=dtype)
    weights = np.empty((N, T, P), dtype=dtype)
    prev_h = prev_c = A.mean(axis=2)  # (N, H)
    caches = []
    for t in range(T):
        prev_h, prev_c, weights[:, t], step_cache = attention_lstm_step_forward(
            x[:, t], prev_h, prev_c, A, Wx, Wh, Wattn, b
        )
        h[:, t] = prev_h
        caches.append(step_cache)
    return h, weights, caches


def attention_lstm_backward(dh: np.ndarray, cache: list) -> tuple[np.ndarray, ...]:
    """Backward of `attention_lstm_forward`: dh (N, T, H) -> (dx, dA, dWx, dWh, dWattn, db)."""
    T = len(cache)
    x0, h0, _, Wx, Wh, Wattn, _, (_, A, _, _) = cache[0]
    check_shapes(("h0", h0, "N H"), ("dh", dh, f"N {T} H"))
    N, D = x0.shape
    dx = np.empty((N, T, D), dtype=dh.dtype)
    dA = np.zeros_like(A)
    dWx, dWh, dWattn = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(Wattn)
    db = np.zeros(Wh.shape[1], dtype=Wh.dtype)
    dprev_h, dprev_c = np.zeros_like(h0), np.zeros_like(h0)
    for t in reversed(range(T)):
        dx[:, t], dprev_h, dprev_c, dA_t, dWx_t, dWh_t, dWattn_t, db_t = (
            attention_lstm_step_backward(dh[:, t] + dprev_h, dprev_c, cache[t])
        )
        dA += dA_t
        dWx += dWx_t
        dWh += dWh_t
        dWattn += dWattn_t
        db += db_t
    dA += (dprev_h + dprev_c)[:, :, None] / A.shape[2]  # h0 = c0 = mean of A over P
    return dx, dA, dWx, dWh, dWattn, db
