"""Captioning without torch: a model folder's encoder.onnx run by ONNX Runtime and its decoder
in NumPy (`rnncap.models.numpy_decoder`), searched by the one beam search.

`load(..., backend="runtime")` builds a `Captioner` through here; so does "auto" where torch is
not installed. Nothing here imports torch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
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


SEARCH_BATCHES = 2  # encoder batches per beam search in `caption_file_batches`


def stack_pixels(encoder, images) -> np.ndarray:
    """PIL images -> the encoder's input (N, 3, S, S) float32, each image preprocessed straight
    into its row."""
    size = encoder.image_size
    batch = np.empty((len(images), 3, size, size), np.float32)
    for row, image in zip(batch, images, strict=True):
        encoder.pixels(image, out=row)
    return batch


def caption_file_batches(captioner, paths: Sequence, options, batch_size: int) -> Iterator[list]:
    """[(index, Caption | Failed)] per `SEARCH_BATCHES` batches of files, sorted by index.

    A thread opens and preprocesses the next batch while this one is encoded by ONNX Runtime or
    searched in NumPy (PIL decodes and resizes without the GIL, in the time the search leaves a
    core). A search takes the images of `SEARCH_BATCHES` encoder calls: a wider search costs
    less per image, and fewer encoder calls follow a search, whose BLAS threads keep spinning a
    while after it (ONNX Runtime's call beside them takes up to a third longer).
    """
    names = [str(p) for p in paths]
    batches = -(-len(paths) // batch_size)
    group = []  # [(features | None, class logits | None, indices, failed)]
    for k, (pixels, indices, failed) in enumerate(_read_ahead(captioner, paths, names, batch_size)):
        encoded = (None, None) if pixels is None else captioner.encoder.run_with_classes(pixels)
        group.append((*encoded, indices, failed))
        if len(group) == SEARCH_BATCHES or k + 1 == batches:
            yield _search_group(captioner, group, names, options)
            group = []


def _search_group(captioner, group: list, names: list[str], options) -> list:
    """One search over a group's encoded batches -> [(index, Caption | Failed)] by index."""
    results = [result for *_, failed in group for result in failed]
    encoded = [batch for batch in group if batch[0] is not None]
    if encoded:
        indices = [i for *_, batch_indices, _ in encoded for i in batch_indices]
        features = np.concatenate([batch[0] for batch in encoded])  # (n, C, h, w)
        logits = [batch[1] for batch in encoded]
        logits = None if any(x is None for x in logits) else np.concatenate(logits)  # (n, 1000)
        captions = captioner.caption_features(
            features, options, [names[i] for i in indices], class_logits=logits
        )
        results += zip(indices, captions, strict=True)
    return sorted(results, key=lambda r: r[0])


def _read_ahead(captioner, paths: Sequence, names: list[str], batch_size: int) -> Iterator:
    """`read_batch` of each batch of files in turn, the next one read in a thread meanwhile."""
    spans = [(s, min(s + batch_size, len(paths))) for s in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(1, thread_name_prefix="rnncap-read") as reader:
        jobs = (reader.submit(read_batch, captioner.encoder, paths, names, *s) for s in spans)
        ahead = next(jobs, None)
        while ahead is not None:
            current, ahead = ahead, next(jobs, None)  # the next batch queued behind this one
            yield current.result()


def read_batch(encoder, paths: Sequence, names: list[str], start: int, stop: int):
    """The files paths[start:stop] -> (pixels (n, 3, S, S) float32 | None, indices of those n,
    [(index, Failed)] for the files that are no usable image)."""
    from rnncap.decode.captioner import Failed

    images, indices, failed = [], [], []
    for i in range(start, stop):
        try:
            images.append(open_image(paths[i]))
            indices.append(i)
        except ImageError as error:
            failed.append((i, Failed(names[i], str(error))))
    return (stack_pixels(encoder, images) if images else None), indices, failed
