"""The search's operations beyond the array API standard, for torch tensors (see `arrays`)."""

from __future__ import annotations

import torch


def topk(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest of each row of x (R, C), largest first: (values, indices), each (R, k)."""
    return x.topk(k, dim=1)


def scatter_min_(x: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> None:
    """x[r, index[r, j]] = min(x[r, index[r, j]], values[r, j]), in place."""
    x.scatter_reduce_(1, index, values, reduce="amin")


def scatter_add_(x: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> None:
    """x[r, index[r, j]] += values[r, j], in place (indices distinct within a row)."""
    x.scatter_add_(1, index, values)


def index_copy(x: torch.Tensor, rows: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """A copy of x with its rows `rows` replaced by `new`."""
    return x.index_copy(0, rows, new)


def steps_every_row(x: torch.Tensor) -> bool:
    """On a GPU a step costs the same for every row, and choosing rows would wait for it."""
    return x.device.type != "cpu"


def like(x, reference: torch.Tensor, dtype=None) -> torch.Tensor:
    """x (a tensor or an array) as a tensor on the reference's device."""
    return torch.as_tensor(x).to(reference.device, dtype)


def to_host(x: torch.Tensor) -> torch.Tensor:
    return x.cpu()


def inference():
    """The context a search runs in: no autograd graph."""
    return torch.no_grad()
