"""Helpers shared by the sub-commands: the usage error, error reporting, flag wording."""

from __future__ import annotations

import sys

from rnncap.utils.errors import RnncapError


class UsageError(RnncapError, ValueError):
    """A bad argument or input file, worded with its flag; `rnncap.cli.main` prints it as one
    line, exit code 2, like every other RnncapError."""


def fail(message: str, code: int = 2) -> int:
    """Print `rnncap: error: message` on stderr and return the exit code."""
    print(f"rnncap: error: {message}", file=sys.stderr)
    return code


def flag_error(error, flags: dict | None = None) -> UsageError:
    """A ConfigError of an option set by a flag, reported under that flag: `--NAME: reason`.
    flags: field name -> flag where the flag is not the field's name with dashes."""
    flag = (flags or {}).get(error.field) or "--" + error.field.replace("_", "-")
    return UsageError(f"{flag}: {error.reason}")


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
    from rnncap.models.onnx_encoder import BackendError, resolve_backend

    try:
        resolve_backend(backend, device)
    except BackendError as error:
        raise UsageError(f"--backend {backend}: {error.reason}") from None


def encoder_for_backend(encoder, backend: str, device, folder=None):
    """`rnncap.models.onnx_encoder.encoder_for_backend`, its errors naming the --backend flag."""
    if backend == "torch":
        return encoder
    from rnncap.models.onnx_encoder import BackendError
    from rnncap.models.onnx_encoder import encoder_for_backend as for_backend

    try:
        return for_backend(encoder, backend, device, folder)[0]
    except BackendError as error:
        raise UsageError(f"--backend {backend}: {error.reason}") from None
