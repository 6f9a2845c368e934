"""The one error family: every error rnncap raises on purpose is an `RnncapError`, so a program
using the library catches one type, and the command line turns any of them into one line and
exit code 2.

    RnncapError
      ModelError     a model folder, checkpoint, exported encoder or weights that cannot be used
      DataError      a data set, caption text, feature cache or image that cannot be used
      ConfigError    an option value a config refuses (rnncap.utils.config)
      CaptionError   an input that cannot be captioned (rnncap.decode.captioner)

Each also keeps the built-in type it always had (ValueError, KeyError, RuntimeError), so code
that caught those still does.
"""

from __future__ import annotations


class RnncapError(Exception):
    """Base of every error rnncap raises on purpose; its message names the file or option."""


class ModelError(RnncapError):
    """A model folder, checkpoint, exported encoder or pretrained weights that cannot be used."""


class DataError(RnncapError):
    """A data set, caption text, feature cache or image that cannot be used."""
