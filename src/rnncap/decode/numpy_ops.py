"""The search's operations beyond the array API standard, for NumPy arrays (see `arrays`)."""

from __future__ import annotations

import contextlib

import numpy as np


def topk(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest of each row of x (R, C), largest first: (values, indices), each (R, k).

    Of equal values the lower index comes first. One pass to find each row's k-th value, then
    only k entries per row are sorted, never the whole row.
    """
    R, C = x.shape
    if k >= C:
        order = np.argsort(-x, axis=1, kind="stable")
        return np.take_along_axis(x, order, 1), order
    negated = -x  # (R, C): the k largest of x are the k smallest of -x
    kth = np.partition(negated, k - 1, axis=1)[:, k - 1 : k]  # (R, 1) the k-th smallest
    below = negated < kth
    ties = negated == kth  # of the values equal to the k-th, the lowest indices fill up
    room = k - below.sum(1, keepdims=True)
    chosen = below | (ties & (np.cumsum(ties, axis=1) <= room))  # (R, C), k per row
    columns = np.nonzero(chosen)[1].reshape(R, k)  # in increasing index order
    order = np.argsort(np.take_along_axis(negated, columns, 1), axis=1, kind="stable")
    indices = np.take_along_axis(columns, order, 1)
    return np.take_along_axis(x, indices, 1), indices


def scatter_min_(x: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """x[r, index[r, j]] = min(x[r, index[r, j]], values[r, j]), in place."""
    np.minimum.at(x, (np.arange(len(x))[:, None], index), values)


def scatter_add_(x: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """x[r, index[r, j]] += values[r, j], in place (indices distinct within a row)."""
    np.add.at(x, (np.arange(len(x))[:, None], index), values)


def index_copy(x: np.ndarray, rows: np.ndarray, new: np.ndarray) -> np.ndarray:
    """A copy of x with its rows `rows` replaced by `new`."""
    out = x.copy()
    out[rows] = new
    return out


def steps_every_row(x: np.ndarray) -> bool:
    """On a CPU the cost grows with the rows: only the live ones are stepped."""
    return False


def like(x, reference: np.ndarray, dtype=None) -> np.ndarray:
    """x (an array, or a CPU tensor through the buffer protocol) as a NumPy array."""
    return np.asarray(x, dtype=dtype)


def to_host(x: np.ndarray) -> np.ndarray:
    return x


def inference():
    """The context a search runs in: nothing to turn off."""
    return contextlib.nullcontext()
