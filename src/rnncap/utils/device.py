"""Device resolution: "auto" picks CUDA when present, once, where the caller asks for it."""

from __future__ import annotations


class DeviceError(ValueError):
    """The requested device does not exist on this machine."""


def resolve_device(name: str = "auto"):
    """'auto' -> cuda when available else cpu; a CUDA device without CUDA raises DeviceError."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("no CUDA device is available")
    return torch.device(name)
