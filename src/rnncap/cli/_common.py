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
