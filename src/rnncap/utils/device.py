"""Device resolution ("auto" picks CUDA when present, once, where the caller asks for it) and the
explicit choices about CUDA arithmetic: TensorFloat-32 and deterministic algorithms.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from rnncap.utils.errors import RnncapError


class DeviceError(RnncapError, ValueError):
    """The requested device does not exist on this machine."""


def resolve_device(name: str = "auto"):
    """'auto' -> cuda when available else cpu; a CUDA device without CUDA raises DeviceError.
    Without torch installed, 'auto' and 'cpu' are the string "cpu" (the torch-free runtime)."""
    try:
        import torch
    except ModuleNotFoundError:
        if name in ("auto", "cpu"):
            return "cpu"
        raise

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name}: no CUDA device is available (use cpu)")
    return torch.device(name)


@contextmanager
def cuda_math(tf32: bool, deterministic: bool = False) -> Iterator[None]:
    """Within the block, CUDA arithmetic as chosen; the previous settings come back after.

    tf32: let CUDA float32 matrix products and cuDNN use TensorFloat-32, which keeps float32's
    range but rounds the inputs of a product to a 10-bit mantissa (relative spacing 2^-10, about
    1e-3, against float32's 2^-23, about 1e-7) and runs them on tensor cores (Ampere and later).
    PyTorch's own defaults differ between the two libraries (matrix products off, cuDNN on), so
    results would depend on which one does the work: both are set here, to the same value.

    deterministic: use PyTorch's deterministic CUDA kernels where it has them, so that a run
    repeats bit for bit (the gradients of `gather`, `embedding` and `repeat_interleave` otherwise
    sum with atomic additions in an order that changes from run to run); operations without a
    deterministic version only warn. Also sets CUBLAS_WORKSPACE_CONFIG, which cuBLAS reads when
    the process makes its first CUDA matrix product. False leaves the current setting alone.

    Neither changes anything on CPU.
    """
    import torch

    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def decode_workers(workers: int | None, device) -> int:
    """DataLoader processes that open and decode images next to the model: `workers` when given,
    else the cores the model leaves free, at most 8. On a CPU the model's intra-op threads
    (torch.get_num_threads()) take their cores, so a 2-core machine decodes in the main process
    (worker processes there only compete with the encoder); a GPU leaves all but one core free."""
    import torch

    if workers is not None:
        return workers
    busy = torch.get_num_threads() if torch.device(device).type == "cpu" else 1
    return max(0, min(8, (os.cpu_count() or 1) - busy))


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` within the block (None: left alone); the
    previous count comes back after. torch.set_num_threads is not local to the calling thread
    (other threads may pick the setting up): use it where no other thread changes it at the
    same time (the web service's searches, which never overlap)."""
    import torch

    if threads is None:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
