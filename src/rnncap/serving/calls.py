"""How the web service calls its Captioner, on torch or on the torch-free runtime: a batch of
images (or of their encodings) to captions, and each request's images encoded on their own.

Nothing here imports torch unless the captioner runs on it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

from rnncap.decode.captioner import Caption, Captioner


def image_encoder(captioner: Captioner):
    """The captioner's image encoder, built now rather than on the first request."""
    return captioner.encoder if captioner.model is None else captioner.model.encoder


def batch_runner(
    captioner: Captioner, options, search_threads: int | None, encodes: bool
) -> Callable[[object, Sequence[str]], list[Caption]]:
    """run_batch(rows, names) -> captions: rows are the batch's images (N, 3, S, S), encoded
    here when `encodes`, else what `request_encoder`'s encode made of them. search_threads:
    the threads of the beam search, torch's or (the runtime's search, in NumPy) BLAS's; None:
    all of them."""
    if captioner.model is None:
        blas_threads = _blas_threads(search_threads)

        def run_runtime(rows, names: Sequence[str]) -> list[Caption]:
            with blas_threads():  # searches never overlap
                if encodes:
                    return captioner.caption_images(rows, list(names), options)
                features, logits = rows if isinstance(rows, tuple) else (rows, None)
                return captioner.caption_features(features, options, list(names), logits)

        return run_runtime
    from rnncap.utils.device import torch_threads

    def run_torch(rows, names: Sequence[str]) -> list[Caption]:
        features = captioner.encode_images(rows) if encodes else rows
        with torch_threads(search_threads):  # searches never overlap
            return captioner.caption_features(features, options, list(names))

    return run_torch


def _blas_threads(threads: int | None) -> Callable[[], AbstractContextManager]:
    """A context for the runtime's search: NumPy's BLAS on `threads` threads, as before after
    it; None: as it is (all the cores). In the server the search runs beside the encoder calls of
    the next requests, and OpenBLAS's threads, which spin a while after each matrix product, take
    their cores (at 16 clients on 2 cores: 2.8x the CPU time a request, under half the requests/s
    of one BLAS thread)."""
    if threads is None:
        return nullcontext
    from threadpoolctl import ThreadpoolController  # the serve extra; after NumPy's import

    controller = ThreadpoolController()  # finds the BLAS libraries loaded (some ms): once

    def limited() -> AbstractContextManager:
        return controller.limit(limits=threads, user_api="blas")  # some microseconds

    return limited


def request_encoder(captioner: Captioner, encoder, per_request: bool | None):
    """(encode, threads) for encoding each request on its own: encode(images (n, 3, S, S),
    alone) -> one encoding per image, and the worker threads that take the encodings and the
    searches; (None, 1) when batches are encoded whole. per_request None: only with an ONNX
    Runtime encoder (its cost an image does not fall with the batch; torch's does).

    ONNX Runtime: one thread a call on each of the model's threads, or all of them when nothing
    else was running (a lone client; calls that start meanwhile add at most threads - 1 more).
    Torch: every call on all the model's threads, calls side by side on as many workers.
    """
    if captioner.model is None:
        return _runtime_encoder(encoder) if per_request in (None, True) else (None, 1)
    import torch

    from rnncap.models.onnx_encoder import OnnxEncoder

    onnx = isinstance(encoder, OnnxEncoder)
    if not (onnx if per_request is None else per_request):
        return None, 1
    if onnx:
        one_thread = OnnxEncoder(encoder.path, threads=1)  # the same graph

        def encode_onnx(images, alone: bool):
            return (encoder if alone else one_thread)(images)

        return encode_onnx, torch.get_num_threads()

    def encode_torch(images, alone: bool):
        return captioner.encode_images(images)

    return encode_torch, torch.get_num_threads()


def _runtime_encoder(encoder):
    """The runtime's encode: (features, class logits) per image, the logits for classifier
    guidance (features alone when the graph has none)."""
    from rnncap.models.onnx_graph import GraphEncoder

    one_thread = GraphEncoder(encoder.path, threads=1)  # the same graph, checked when loaded

    def encode(images, alone: bool):
        features, logits = (encoder if alone else one_thread).run_with_classes(images)
        return list(features) if logits is None else list(zip(features, logits, strict=True))

    return encode, encoder.threads or os.cpu_count() or 1
