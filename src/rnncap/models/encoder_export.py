"""A model folder's encoder.onnx put in place: the model's image encoder exported to ONNX (its
features and ImageNet class logits), checked against torch on a few images, and its SHA-256
recorded in config.json. `rnncap export` and scripts/bundle_model.py write folders through here.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from rnncap.models import onnx_encoder
from rnncap.models.files import CONFIG, VOCAB, WEIGHTS, read_captioner_config, read_config
from rnncap.models.onnx_check import RECORD, file_digest
from rnncap.models.onnx_graph import ENCODER_FILE
from rnncap.utils.errors import ModelError
from rnncap.utils.io import atomic_write, atomic_write_text

ATOL = 1e-4  # largest feature difference from torch an export may have


class ExportCheckError(ModelError, ValueError):
    """An exported graph whose features differ from the torch encoder's by more than allowed;
    nothing was written."""


@dataclass
class Exported:
    """What `export_into` wrote: the graph, and how far its features were from torch's."""

    path: Path  # the encoder.onnx written
    encoder: str  # the encoder's name
    size: int  # bytes
    difference: float  # largest |torch - ONNX Runtime| feature difference on the check images
    images: int  # how many check images
    atol: float  # the largest difference accepted

    def __str__(self) -> str:
        return (
            f"{self.path}: {self.encoder} encoder, {self.size / 1e6:.1f} MB; largest feature "
            f"difference from torch on {self.images} images {self.difference:.1e} "
            f"(accepted up to {self.atol:g})"
        )


def random_images(count: int = 4) -> list:
    """Seeded random PIL images (240 x 320), the default check images."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    shape = (240, 320, 3)
    return [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(count)]


def export_into(
    folder: Path,
    out: Path | None = None,
    images=None,
    atol: float = ATOL,
    classifier_float16: bool = False,
) -> Exported:
    """Export the encoder of the model in `folder` as encoder.onnx, check it, then publish it.

    out: None or `folder` itself: encoder.onnx is added in place (the graph first, then the
    config.json recording its digest); else a new folder written atomically, a copy of the model
    (its language models too) with the graph. images: PIL images run through both encoders (None:
    `random_images()`); an ExportCheckError when a feature differs by more than `atol`.
    classifier_float16: the classifier's weights in float16 (`onnx_encoder.export_encoder`).
    """
    import torch

    from rnncap.models.encoders import build_encoder
    from rnncap.models.fusion import LM_FOLDERS

    folder = Path(folder)
    read_captioner_config(folder)  # a damaged config, or a model without an rnncap encoder
    config = read_config(folder)
    in_place = out is None or (Path(out).exists() and Path(out).resolve() == folder.resolve())
    name = config["captioner"]["encoder"]
    encoder = build_encoder(name)
    pixels = torch.stack([encoder.preprocess(p) for p in images or random_images()])
    outcome = {}

    def write(target: Path) -> None:
        graph = onnx_encoder.export_encoder(
            encoder,
            target if in_place else target / ENCODER_FILE,
            classifier_float16=classifier_float16,
        )
        exported = onnx_encoder.OnnxEncoder(graph, threads=1)
        difference = onnx_encoder.max_feature_difference(encoder, exported, pixels)
        if not difference <= atol:
            raise ExportCheckError(
                f"the exported {name} encoder differs from torch by {difference:.1e} (more than "
                f"the {atol:g} accepted); nothing written"
            )
        outcome.update(difference=difference, size=graph.stat().st_size)
        record = {"sha256": file_digest(graph), "exported_with": f"torch {torch.__version__}"}
        config[RECORD] = record
        if not in_place:
            for file in (VOCAB, WEIGHTS):
                shutil.copy2(folder / file, target / file)
            for lm in LM_FOLDERS:  # the language models fused at decoding time
                if (folder / lm).is_dir():
                    shutil.copytree(folder / lm, target / lm)
            (target / CONFIG).write_text(json.dumps(config, indent=2) + "\n")

    if in_place:  # the graph, then the digest that vouches for it (a kill between: re-export)
        path = atomic_write(folder / ENCODER_FILE, write)
        atomic_write_text(folder / CONFIG, json.dumps(config, indent=2) + "\n")
    else:
        path = atomic_write(Path(out), write, folder=True) / ENCODER_FILE
    return Exported(path, name, outcome["size"], outcome["difference"], len(pixels), atol)
