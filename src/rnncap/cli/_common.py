"""Helpers shared by the sub-commands: error reporting and device resolution."""

from __future__ import annotations

import sys


class UsageError(Exception):
    """A bad argument or input file: printed as one line, exit code 2."""


def fail(message: str, code: int = 2) -> int:
    """Print `rnncap: error: message` on stderr and return the exit code."""
    print(f"rnncap: error: {message}", file=sys.stderr)
    return code


def device_usage_error(error: Exception) -> UsageError:
    """The library's DeviceError (a CUDA device asked for, none present) in --device wording."""
    return UsageError(f"--device cuda: {error} (use --device cpu)")


def resolve_device(name: str):
    """`rnncap.utils.device.resolve_device`, its error naming the --device flag."""
    from rnncap.utils.device import DeviceError
    from rnncap.utils.device import resolve_device as resolve

    try:
        return resolve(name)
    except DeviceError as error:
        raise device_usage_error(error) from None


BACKENDS = ("auto", "onnx", "torch")  # rnncap.models.onnx_encoder.BACKENDS, without importing it


def add_backend_argument(parser) -> None:
    """--backend for the inference commands (caption, features, evaluate, serve)."""
    parser.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="how the image encoder runs: onnx (ONNX Runtime, several times faster on a CPU), "
        "torch, or auto: onnx on a CPU when onnxruntime is installed, torch on a GPU "
        "(default: auto)",
    )


def check_backend(backend: str, device) -> None:
    """A backend that cannot run here (onnx on a GPU, onnx without onnxruntime) as a UsageError."""
    if backend == "auto":  # always runs somewhere (without torch: the torch-free runtime)
        return
    from rnncap.models.onnx_encoder import resolve_backend

    try:
        resolve_backend(backend, device)
    except ValueError as error:
        raise UsageError(f"--backend {backend}: {error}") from None


def encoder_for_backend(encoder, backend: str, device, folder=None):
    """`rnncap.models.onnx_encoder.encoder_for_backend`, its errors naming the --backend flag."""
    if backend == "torch":
        return encoder
    from rnncap.models.onnx_encoder import encoder_for_backend as for_backend

    try:
        return for_backend(encoder, backend, device, folder)[0]
    except (ValueError, ImportError, RuntimeError, OSError) as error:
        raise UsageError(f"--backend {backend}: {error}") from None
