"""Centred finite differences in float64, and the relative error used to compare gradients.

`points=2` is the classic (f(x+h) - f(x-h)) / 2h; `points=4` the fourth-order stencil
(f(x-2h) - 8 f(x-h) + 8 f(x+h) - f(x+2h)) / 12h, accurate to ~1e-12 with h = 1e-3.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# points -> (k, weight) pairs: gradient = sum of weight * (f(x + k h) - f(x - k h)) / h
_STENCILS = {2: ((1, 1 / 2),), 4: ((1, 8 / 12), (2, -1 / 12))}


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest elementwise |a - b| / max(1e-8, |a| + |b|)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"b: expected shape {a.shape}, got {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def _numerical_gradient(
    evaluate: Callable[[np.ndarray], float], x: np.ndarray, h: float, points: int
) -> np.ndarray:
    """d evaluate(x) / dx elementwise; x is perturbed in place and restored."""
    if points not in _STENCILS:
        raise ValueError(f"points: expected one of {sorted(_STENCILS)}, got {points}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x: expected a floating-point array, got dtype {x.dtype}")
    grad = np.zeros(x.shape, dtype=np.float64)
    for index in np.ndindex(x.shape):
        old = x[index]
        total = 0.0
        for k, weight in _STENCILS[points]:
            x[index] = old + k * h
            f_plus = evaluate(x)
            x[index] = old - k * h
            f_minus = evaluate(x)
            total += weight * (f_plus - f_minus)  # exactly 0 where x has no effect
        x[index] = old
        grad[index] = total / h
    return grad


def eval_numerical_gradient(
    f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-5, points: int = 2
) -> np.ndarray:
    """Gradient of the scalar f at x (same shape as x) by centred differences."""
    return _numerical_gradient(lambda z: float(f(z)), x, h, points)


def eval_numerical_gradient_array(
    f: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    df: np.ndarray,
    h: float = 1e-5,
    points: int = 2,
) -> np.ndarray:
    """Gradient of sum(f(x) * df) at x, for an array-valued f with upstream gradient df."""
    return _numerical_gradient(
        lambda z: float(np.sum(np.asarray(f(z), dtype=np.float64) * df)), x, h, points
    )
