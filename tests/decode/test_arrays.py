"""The search's extra array operations: NumPy's against plain Python, and against torch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnncap.decode import numpy_ops, torch_ops
from rnncap.decode.arrays import backend


def reference_topk(row, k):
    """Largest first; of equal values the lower index first."""
    order = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
    return [row[i] for i in order], order


@pytest.mark.parametrize("k", [1, 3, 7, 12])
def test_numpy_topk_is_sorted_with_ties_by_index(k):
    rng = np.random.default_rng(k)
    x = rng.integers(-3, 3, size=(20, 12)).astype(np.float32)  # many ties
    x[x == -3] = -np.inf
    values, indices = numpy_ops.topk(x, k)
    for r in range(len(x)):
        want_values, want_indices = reference_topk(x[r].tolist(), k)
        assert values[r].tolist() == want_values
        assert indices[r].tolist() == want_indices


@pytest.mark.parametrize("k", [1, 5, 16])
def test_numpy_topk_rows_with_and_without_ties(k):
    """Wide rows as in the search (beams x vocabulary): distinct values, and rows where the
    k-th value recurs beyond the k chosen."""
    rng = np.random.default_rng(k)
    x = rng.standard_normal((30, 400)).astype(np.float32)
    x[::3] = rng.integers(-4, 4, size=(10, 400))  # every third row: ties everywhere
    x[1::3, rng.integers(0, 400, 100)] = -np.inf
    values, indices = numpy_ops.topk(x, k)
    for r in range(len(x)):
        want_values, want_indices = reference_topk(x[r].tolist(), k)
        assert values[r].tolist() == want_values
        assert indices[r].tolist() == want_indices


@pytest.mark.parametrize("k", [1, 3, numpy_ops.SCAN_K])
def test_numpy_topk_by_scans_leaves_its_input_as_it_was(k):
    """The small-k path marks its picks in the input and restores them: rows that run out of
    finite values (-inf ties, picked again by the scans) and NaN rows take the partition; a
    read-only input is scanned in a copy."""
    rng = np.random.default_rng(k)
    x = rng.standard_normal((12, 300)).astype(np.float32)
    x[0, 2:] = -np.inf  # two finite values
    x[1, :] = -np.inf
    x[2, 5] = np.nan
    x[3, ::2] = -0.0
    x[3, 1::2] = 0.0
    before = x.copy()
    values, indices = numpy_ops.topk(x, k)
    np.testing.assert_array_equal(x, before)
    assert np.array_equal(np.signbit(x), np.signbit(before))
    want = numpy_ops._topk_by_partition(before, k)
    np.testing.assert_array_equal(values, want[0])
    np.testing.assert_array_equal(indices, want[1])
    for r in (0, 1, 3, 4):
        want_values, want_indices = reference_topk(before[r].tolist(), k)
        assert values[r].tolist() == want_values and indices[r].tolist() == want_indices
    frozen = before.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(numpy_ops.topk(frozen, k)[1], indices)


def test_numpy_topk_values_equal_torch_topk_values():
    x = np.random.default_rng(0).standard_normal((6, 50))
    values, indices = numpy_ops.topk(x, 5)
    want_values, want_indices = torch_ops.topk(torch.from_numpy(x), 5)
    np.testing.assert_array_equal(values, want_values.numpy())
    np.testing.assert_array_equal(indices, want_indices.numpy())  # no ties: the same order


@pytest.mark.parametrize("ops, wrap", [(numpy_ops, np.array), (torch_ops, torch.tensor)])
def test_scatters_and_index_copy(ops, wrap):
    x = wrap([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    ops.scatter_min_(x, wrap([[2, 2], [0, 1]]), wrap([[1.5, 3.0], [9.0, -1.0]]))
    assert x.tolist() == [[0.0, 1.0, 1.5], [3.0, -1.0, 5.0]]
    ops.scatter_add_(x, wrap([[0], [2]]), wrap([[0.5], [1.0]]))
    assert x.tolist() == [[0.5, 1.0, 1.5], [3.0, -1.0, 6.0]]
    y = ops.index_copy(x, wrap([1]), wrap([[7.0, 7.0, 7.0]]))
    assert y.tolist() == [[0.5, 1.0, 1.5], [7.0, 7.0, 7.0]]
    assert x.tolist()[1] == [3.0, -1.0, 6.0]  # a copy


def test_backend_follows_the_array():
    assert backend(np.zeros(2))[1] is numpy_ops
    assert backend(torch.zeros(2))[1] is torch_ops
