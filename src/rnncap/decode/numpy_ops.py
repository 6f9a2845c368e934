"""The search's operations beyond the array API standard, for NumPy arrays (see `arrays`)."""

from __future__ import annotations

import contextlib

import numpy as np


def topk(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest of each row of x (R, C), largest first: (values, indices), each (R, k).

    Of equal values the lower index comes first. One pass picks each row's k candidates, then
    only those are sorted, never the whole row; a row where the k-th value recurs outside them
    picks the lowest indices of it instead.
    """
    R, C = x.shape
    if k >= C:
        order = np.argsort(-x, axis=1, kind="stable")
        return np.take_along_axis(x, order, 1), order
    negated = -x  # (R, C): the k largest of x are the k smallest of -x
    columns = np.argpartition(negated, k - 1, axis=1)[:, :k]  # (R, k) in no order
    kth = np.take_along_axis(negated, columns, 1).max(1, keepdims=True)  # (R, 1)
    tied = (negated <= kth).sum(1) > k  # (R,) the k-th value also outside the candidates
    if tied.any():
        columns[tied] = _lowest_of_ties(negated[tied], kth[tied], k)
    columns.sort(axis=1)  # by index: the stable sort below keeps equal values in index order
    order = np.argsort(np.take_along_axis(negated, columns, 1), axis=1, kind="stable")
    indices = np.take_along_axis(columns, order, 1)
    return np.take_along_axis(x, indices, 1), indices


def _lowest_of_ties(negated: np.ndarray, kth: np.ndarray, k: int) -> np.ndarray:
    """The columns of the k smallest of each row (R, C) whose k-th smallest is kth (R, 1):
    all those below kth, then the lowest-indexed of those equal to it; (R, k) by index."""
    below = negated < kth
    ties = negated == kth
    room = k - below.sum(1, keepdims=True)
    chosen = below | (ties & (np.cumsum(ties, axis=1) <= room))  # (R, C), k per row
    return np.nonzero(chosen)[1].reshape(len(negated), k)


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
