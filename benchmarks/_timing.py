"""Wall-clock timing shared by the benchmark scripts (CUDA work is waited for at both ends)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def timed(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Seconds that fn() takes, including the GPU work it queued."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start
