"""Helpers shared by the sub-commands: error reporting and device resolution."""

from __future__ import annotations

import sys


class UsageError(Exception):
    """A bad argument or input file: printed as one line, exit code 2."""


def fail(message: str, code: int = 2) -> int:
    """Print `rnncap: error: message` on stderr and return the exit code."""
    print(f"rnncap: error: {message}", file=sys.stderr)
    return code


def resolve_device(name: str):
    """'auto' -> cuda when available else cpu; 'cuda' without CUDA is a clear error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device cpu)")
    return torch.device(name)
