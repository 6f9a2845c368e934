"""Captioning without torch: a model folder's encoder.onnx run by ONNX Runtime and its decoder
in NumPy (`rnncap.models.numpy_decoder`), searched by the one beam search.

`load(..., backend="runtime")` builds a `Captioner` through here; so does "auto" where torch is
not installed. Nothing here imports torch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from rnncap.data.images import ImageError, open_image
from rnncap.utils.errors import ModelError
from rnncap.utils.io import InvalidFileError


def torch_available() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except ImportError:  # an import hook that hides it
        return False


def runtime_parts(folder: Path, threads: int | None = None, export=None):
    """(NumpyDecoder, GraphEncoder, Vocabulary) of a model folder: its own encoder.onnx (never
    exported again). A folder without one takes `export(encoder name)`'s file, when given (with
    torch: the user cache's export), else it is a ModelError."""
    from rnncap.models.files import read_captioner_config, read_vocabulary
    from rnncap.models.numpy_decoder import NumpyDecoder
    from rnncap.models.onnx_graph import ENCODER_FILE, GraphEncoder

    config = read_captioner_config(folder)
    vocab = read_vocabulary(folder, config)
    decoder = NumpyDecoder.from_folder(folder, config)
    if (Path(folder) / ENCODER_FILE).is_file():
        encoder = GraphEncoder.from_folder(folder, threads)
    elif export is not None:
        encoder = GraphEncoder(export(config.encoder), threads)
    else:
        raise ModelError(
            f"{folder}: no {ENCODER_FILE}; captioning without torch needs the encoder exported "
            f"into the model folder (rnncap export MODEL OUT, with torch installed)"
        )
    if (encoder.name, encoder.out_channels) != (config.encoder, config.feature_dim):
        raise InvalidFileError(
            encoder.path,
            f"a {encoder.name} encoder of {encoder.out_channels} "
            f"channels, but the model's is {config.encoder} of "
            f"{config.feature_dim}",
        )
    return decoder, encoder, vocab


def runtime_captioner(folder: Path, name: str, export=None):
    """The `Captioner` of backend "runtime" for a model folder (`runtime_parts`), with the
    folder's decoding options."""
    from rnncap.decode.captioner import Captioner
    from rnncap.decode.inputs import folder_options

    decoder, encoder, vocab = runtime_parts(folder, export=export)
    return Captioner(
        None, vocab, folder_options(folder), name=name, decoder=decoder, encoder=encoder
    )


def stack_pixels(encoder, images) -> np.ndarray:
    """PIL images -> the encoder's input (N, 3, S, S) float32."""
    return np.stack([encoder.pixels(image) for image in images])


def caption_file_batches(captioner, paths: Sequence, options, batch_size: int) -> Iterator[list]:
    """[(index, Caption | Failed)] per batch of files, in order: opened and preprocessed here,
    encoded by ONNX Runtime, searched in NumPy."""
    from rnncap.decode.captioner import Failed

    names = [str(p) for p in paths]
    for start in range(0, len(paths), batch_size):
        results, images, indices = [], [], []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                images.append(open_image(paths[i]))
                indices.append(i)
            except ImageError as error:
                results.append((i, Failed(names[i], str(error))))
        if images:
            batch = stack_pixels(captioner.encoder, images)
            captions = captioner.caption_images(batch, [names[i] for i in indices], options)
            results += list(zip(indices, captions, strict=True))
        yield sorted(results, key=lambda r: r[0])
