"""rnncap: image captioning with recurrent networks, every recurrent piece written out and verified.

    import rnncap
    captioner = rnncap.load("default")        # model, vocabulary, preprocessing, decoding options
    print(captioner("photo.jpg").text)

Importing rnncap is cheap (no torch); `load` and the classes below are imported on first use.
Every error rnncap raises on purpose is an `RnncapError` (`ModelError`, `DataError`,
`ConfigError`, `CaptionError`): catch that one type.
`rnncap.numpy_ref` is the NumPy reference, `rnncap.nn` the PyTorch cells written from scratch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "load": "rnncap.decode.captioner",
    "Captioner": "rnncap.decode.captioner",
    "Caption": "rnncap.decode.captioner",
    "CaptionError": "rnncap.decode.captioner",
    "Failed": "rnncap.decode.captioner",
    "DecodeOptions": "rnncap.decode.beam",
    "RnncapError": "rnncap.utils.errors",
    "ModelError": "rnncap.utils.errors",
    "DataError": "rnncap.utils.errors",
    "ConfigError": "rnncap.utils.config",
}

__all__ = [
    "__version__",
    "load",
    "Captioner",
    "Caption",
    "CaptionError",
    "Failed",
    "DecodeOptions",
    "RnncapError",
    "ModelError",
    "DataError",
    "ConfigError",
]

if TYPE_CHECKING:
    from rnncap.decode.beam import DecodeOptions
    from rnncap.decode.captioner import Caption, Captioner, CaptionError, Failed, load
    from rnncap.utils.config import ConfigError
    from rnncap.utils.errors import DataError, ModelError, RnncapError


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rnncap' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
