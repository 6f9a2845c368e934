"""What a `Captioner` is given, made usable: images of every kind as RGB PIL images, batches
of preprocessed images, and a model folder's decoding options.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
from PIL import Image

from rnncap.data.images import ImageError, decode_image_bytes, open_image, to_rgb
from rnncap.decode.options import DecodeOptions
from rnncap.utils.errors import RnncapError


class CaptionError(RnncapError, ValueError):
    """An input that cannot be captioned; the message names the item (its path, or its index)."""


def to_pil(x, label: str) -> Image.Image:
    """One input -> an RGB PIL image, or CaptionError naming it."""
    try:
        if isinstance(x, str | os.PathLike):
            return open_image(x)
        if isinstance(x, bytes | bytearray | memoryview):
            return decode_image_bytes(bytes(x), f"{label} (bytes)")
    except ImageError as error:
        raise CaptionError(str(error)) from None
    if isinstance(x, Image.Image):
        return to_rgb(x)
    if isinstance(x, np.ndarray):
        if x.ndim != 3 or x.shape[2] != 3 or x.dtype != np.uint8:
            raise CaptionError(
                f"{label}: an array must be (H, W, 3) uint8, got {x.shape} {x.dtype}"
            )
        return Image.fromarray(x, mode="RGB")
    raise CaptionError(
        f"{label}: cannot caption a {type(x).__name__}; give a path, a PIL image, "
        f"an (H, W, 3) uint8 array or the bytes of an image file"
    )


def folder_options(folder) -> DecodeOptions:
    """The model folder's config.json "decoding" entry (defaults where it has none)."""
    from rnncap.models.files import CONFIG, read_config
    from rnncap.utils.config import ConfigError
    from rnncap.utils.io import InvalidFileError

    try:
        return DecodeOptions.from_dict(read_config(folder).get("decoding", {}))
    except ConfigError as error:
        raise InvalidFileError(folder / CONFIG, error.reason, f"decoding.{error.field}") from None


def name_of(x) -> str | None:
    return str(x) if isinstance(x, str | os.PathLike) else None


def flatten(groups, total: int, progress: bool) -> Iterator:
    """The results of [(index, result)] groups, in order, with a progress bar."""
    from tqdm import tqdm

    with tqdm(total=total, unit="img", disable=not progress, desc="caption") as bar:
        for results in groups:
            for _, result in results:
                yield result
            bar.update(len(results))


def stack(arrays: list):
    """A batch of preprocessed images (N, 3, S, S): tensors stacked by torch, arrays by NumPy."""
    if isinstance(arrays[0], np.ndarray):
        return np.stack(arrays)
    import torch

    return torch.stack(arrays)


def float32(weights):
    return weights.astype(np.float32) if isinstance(weights, np.ndarray) else weights.float()
