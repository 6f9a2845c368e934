"""The search's operations beyond the array API standard, for NumPy arrays (see `arrays`)."""

from __future__ import annotations

import contextlib

import numpy as np

SCAN_K = 8  # up to this k, one argmax pass over a row per pick beats partitioning the row


def topk(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest of each row of x (R, C), largest first: (values, indices), each (R, k).

    Of equal values the lower index comes first. A small k (the beam) takes k argmax passes
    (`_topk_by_scans`), a larger one a partition of each row (`_topk_by_partition`); the rows
    where the scans reach -inf (or NaN), whose ties the scans cannot tell apart, take the
    partition too. Either way the same values and indices.
    """
    R, C = x.shape
    if k >= C:
        order = np.argsort(-x, axis=1, kind="stable")
        return np.take_along_axis(x, order, 1), order
    if k > SCAN_K or not np.issubdtype(x.dtype, np.floating):
        return _topk_by_partition(x, k)
    values, indices = _topk_by_scans(x, k)
    redo = ~(values[:, -1] > -np.inf) | np.isnan(values[:, 0])  # (R,) scans take NaN first
    if redo.any():
        values[redo], indices[redo] = _topk_by_partition(x[redo], k)
    return values, indices


def _topk_by_scans(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k passes of argmax (the first of equal maxima: the lowest index), each pick set to -inf
    for the next pass and restored after (in x itself when it is writeable, else in a copy):
    (values, indices), each (R, k), largest first. Right while no pick is -inf or NaN."""
    R = len(x)
    work = x if x.flags.writeable else x.copy()
    rows = np.arange(R)
    values = np.empty((R, k), x.dtype)
    indices = np.empty((R, k), np.intp)
    for j in range(k):
        indices[:, j] = work.argmax(axis=1)
        values[:, j] = work[rows, indices[:, j]]
        work[rows, indices[:, j]] = -np.inf
    for j in reversed(range(k)):  # x as it was (a row past its last finite value picks the
        work[rows, indices[:, j]] = values[:, j]  # same column again: its first value last)
    return values, indices


def _topk_by_partition(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`topk` for any k < C: one pass picks each row's k candidates, then only those are
    sorted, never the whole row; a row where the k-th value recurs outside them picks the
    lowest indices of it instead."""
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
