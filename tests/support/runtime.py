"""The bundled default model as the torch-free runtime needs it: with its encoder.onnx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rnncap.models.files import DEFAULT_MODEL
from rnncap.models.onnx_graph import ENCODER_FILE


def default_with_encoder(folder: Path) -> Path:
    """The bundled default model folder when it carries its encoder.onnx, else a copy of it
    with one exported into `folder`/default (`rnncap export`, with torch)."""
    if (DEFAULT_MODEL / ENCODER_FILE).is_file():
        return DEFAULT_MODEL
    out = folder / "default"
    if not (out / ENCODER_FILE).is_file():
        subprocess.run(
            [sys.executable, "-m", "rnncap.cli", "export", "default", str(out)],
            check=True,
            capture_output=True,
        )
    return out
