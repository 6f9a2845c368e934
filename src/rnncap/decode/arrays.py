"""The array backend of a search: the array API namespace of its arrays (NumPy or torch) and the
few operations the standard lacks, from `numpy_ops` or `torch_ops` (same names, same results).

The search is written once against these; which backend runs is decided by the arrays the
decoder returns, never by a flag further down.
"""

from __future__ import annotations

from types import ModuleType

from array_api_compat import array_namespace, device, is_torch_array

__all__ = ["backend", "device"]


def backend(x) -> tuple[ModuleType, ModuleType]:
    """(xp, ops) for an array x: its array API namespace and its module of extra operations."""
    if is_torch_array(x):
        from rnncap.decode import torch_ops as ops
    else:
        from rnncap.decode import numpy_ops as ops
    return array_namespace(x), ops
