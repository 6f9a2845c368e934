"""The one way from images to captions: `load()` returns a `Captioner` that owns the model, its
vocabulary, its preprocessing and its decoding options.

    captioner = rnncap.load("default")
    captioner("photo.jpg").text                      # a path, Path, PIL image, HxWx3 array or bytes
    captioner([a, b, c], beam=5)                     # a list is captioned as one batch
    for result in captioner.caption_files(paths):    # a large folder, DataLoader workers decoding
        ...

The command line, the web service, evaluation and training's dev captions all go through
`Captioner.caption_features`, the single place where encoder features become caption strings.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from rnncap.decode.beam import DecodeOptions, decode
from rnncap.decode.inputs import (
    CaptionError,
    flatten,
    float32,
    folder_options,
    name_of,
    stack,
    to_pil,
)
from rnncap.utils.config import ConfigError


@dataclass
class Caption:
    """One image's caption."""

    text: str
    score: float  # sum of the words' log-probabilities (divided by length**a with a penalty a)
    words: list[str]  # the caption's words, one per attention row
    attention: object | None  # (L, P) float32 on the CPU (a tensor, or NumPy without torch)
    grid: tuple[int, int] | None  # (h, w) of the encoder's feature grid, P = h * w
    image: str | None = None  # the file (or upload name) it came from, when there is one


@dataclass
class Failed:
    """An image of `caption_files` that could not be captioned; `reason` names the file."""

    image: str
    reason: str


def load(
    model: str | os.PathLike = "default",
    device="auto",
    backend: str | None = "auto",
) -> Captioner:
    """A `Captioner` for a model folder ("default": the bundled model, or a run folder).

    device: "auto" (CUDA when available), "cpu", "cuda", "cuda:N" or a torch.device.
    backend: how the image encoder runs: "onnx" (ONNX Runtime, CPU only), "torch", or "auto"
    (the default; None means the same): onnx on a CPU when onnxruntime is installed, else torch.
    The decoder runs in torch with these. The ONNX graph is the model folder's encoder.onnx
    (`rnncap export`) or one exported into the user cache on first use.
    backend "runtime" needs no torch: the folder's encoder.onnx in ONNX Runtime and the decoder
    in NumPy, on the CPU; "auto" chooses it where torch is not installed. A folder without an
    encoder.onnx needs torch: the encoder is exported into the user cache once.
    Decoding defaults come from the folder's config.json "decoding" entry when it has one.
    A Show-and-Tell folder (`rnncap convert-show-tell`) runs its encoder in torch.
    """
    from rnncap.decode.runtime import runtime_captioner, torch_available
    from rnncap.models.files import resolve_model_dir

    if backend == "runtime" or (backend in ("auto", None) and not torch_available()):
        export = None
        if torch_available():  # for a folder without encoder.onnx: the user cache's export
            from rnncap.models.onnx_encoder import cached_encoder_file as export
        return runtime_captioner(resolve_model_dir(model), str(model), export)
    from rnncap.models.folder import load_model
    from rnncap.models.onnx_encoder import resolve_backend
    from rnncap.models.showtell_folder import is_show_tell
    from rnncap.utils.device import resolve_device

    device = resolve_device(device) if isinstance(device, str) else device
    resolve_backend(backend or "auto", device)  # a bad name or device fails before any loading
    folder = resolve_model_dir(model)
    options = folder_options(folder)
    if is_show_tell(folder):
        from rnncap.decode.showtell_captioner import show_tell_captioner

        return show_tell_captioner(folder, options, backend, device, str(model))
    network, vocab = load_model(folder, device)
    from rnncap.models.fusion import load_language_models

    return Captioner(
        network,
        vocab,
        options,
        backend=backend or "auto",
        name=str(model),
        folder=folder,
        language_models=load_language_models(folder, vocab, device),
    )


def _inference(method):
    """Run a torch captioner's method under torch.inference_mode (nothing for the runtime)."""

    def wrapped(self, *args, **kwargs):
        if self.model is None:
            return method(self, *args, **kwargs)
        import torch

        with torch.inference_mode():
            return method(self, *args, **kwargs)

    wrapped.__name__, wrapped.__doc__ = method.__name__, method.__doc__
    return wrapped


class Captioner:
    """A captioning model ready to use: call it on images, or on encoder features.

    model: a `CaptioningRNN` (or a `ShowTell`) in eval mode, on its device; vocab: its
    `Vocabulary`;
    options: the default `DecodeOptions` (each call may override beam and max_length);
    backend: "auto", "onnx" or "torch" swaps the model's image encoder accordingly (see `load`),
    None leaves it alone; `self.backend` is the one in use. folder: the model folder, where an
    exported encoder.onnx is looked for first. Without torch, `model` is None and `decoder`
    (a `NumpyDecoder`) and `encoder` (a `GraphEncoder`) take its place: backend "runtime".
    """

    def __init__(
        self,
        model,
        vocab,
        options: DecodeOptions | None = None,
        backend: str | None = None,
        name: str = "",
        folder: str | os.PathLike | None = None,
        language_models: dict | None = None,
        decoder=None,
        encoder=None,
    ) -> None:
        self.model = model
        self.decoder, self.encoder = decoder, encoder  # the runtime's (model is None)
        self.vocab = vocab
        self.options = options or DecodeOptions()
        if backend is not None and model is not None:  # None: keep the model's encoder
            from rnncap.models.onnx_encoder import use_backend

            use_backend(model, backend, folder)
        self.name = name
        self._guide = None  # classifier guidance's class -> word table, on first use
        self._classifier = None  # the torch encoder's ImageNet classifier, on first use
        # "lm" / "source_lm" -> a LanguageModel fused at decoding time (rnncap.models.fusion)
        self.language_models = dict(language_models or {})

    @property
    def backend(self) -> str:
        """How the image encoder runs: "onnx" (ONNX Runtime) or "torch"; "runtime" without
        torch (ONNX Runtime and NumPy)."""
        if self.model is None:
            return "runtime"
        from rnncap.models.onnx_encoder import current_backend

        return current_backend(self.model)

    @property
    def device(self):
        """The torch device of the model; "cpu" for the runtime."""
        return "cpu" if self.model is None else next(self.model.parameters()).device

    @property
    def config(self):
        """The model's `CaptionerConfig` (encoder, cell type, sizes)."""
        return (self.decoder if self.model is None else self.model).config

    def decode_options(
        self, beam: int | None = None, max_length: int | None = None
    ) -> DecodeOptions:
        """The held options, with `beam` and `max_length` replaced when given."""
        changes = {"beam_size": beam, "max_length": max_length}
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self.options, **changes) if changes else self.options

    # ------------------------------------------------------------------ features -> captions
    @_inference
    def caption_features(
        self,
        features,
        options: DecodeOptions | None = None,
        names: Sequence[str] | None = None,
        class_logits=None,
    ) -> list[Caption]:
        """Encoder features (N, C, h, w) or (N, C) -> a `Caption` per image (one batched search).

        class_logits: the encoder's ImageNet logits (N, 1000) of these images for classifier
        guidance, when known (the torch encoder computes them from the features)."""
        if self.model is None:
            features = np.asarray(features, dtype=np.float32)
        else:
            features = features.to(self.device, non_blocking=True).float()
        options = options or self.options
        bonus, required = self._guidance(features, options, class_logits)
        decoder, no_end_after = self._decoder(options), self._no_end_after(options)
        decoded = decode(decoder, features, options, bonus, no_end_after, required)
        grid = tuple(features.shape[2:4]) if features.ndim == 4 else None
        attention = decoded.attention or [None] * len(decoded.tokens)
        names = names if names is not None else [None] * len(decoded.tokens)
        return [
            Caption(
                text=self.vocab.decode(tokens),
                score=float(score),
                words=[self.vocab.itos[t] for t in tokens],
                attention=float32(weights) if weights is not None else None,
                grid=grid if weights is not None else None,
                image=None if name is None else str(name),
            )
            for tokens, score, weights, name in zip(
                decoded.tokens, decoded.scores, attention, names, strict=True
            )
        ]

    def _decoder(self, options: DecodeOptions):
        """The model the search steps: the captioner, fused with its language models when the
        options give them a weight."""
        if options.lm_weight == 0 and options.source_lm_weight == 0:
            return self.decoder if self.model is None else self.model
        if self.model is None:
            raise CaptionError("language-model fusion needs torch (the runtime has no lm/)")
        from rnncap.models.fusion import FusedDecoder, fusion_terms

        try:
            terms = fusion_terms(self.language_models, options.lm_weight, options.source_lm_weight)
        except ConfigError as error:
            raise CaptionError(f"{self.name or 'model'}: {error}") from None
        return FusedDecoder(self.model, [(lm.to(self.device), w) for lm, w in terms])

    def _no_end_after(self, options: DecodeOptions) -> np.ndarray | None:
        """(V,) bool: the vocabulary's ids of the words a caption may not end on, or None."""
        if not options.no_end_after:
            return None
        mask = np.zeros(len(self.vocab), dtype=bool)
        ids = [self.vocab.stoi[w] for w in options.no_end_after if w in self.vocab.stoi]
        mask[ids] = True
        return mask

    def _guidance(self, features, options: DecodeOptions, class_logits=None):
        """Classifier guidance's per-image word bonus (N, V) and required words (N, V) bool,
        each None when its option is off (`ClassifierGuide.for_options`)."""
        if options.guidance <= 0 and options.must_name <= 0:
            return None, None
        if self._guide is None:
            from rnncap.models.guidance import ClassifierGuide

            self._guide = ClassifierGuide(None, self.vocab.stoi, len(self.vocab))
        if class_logits is None:
            class_logits = self._classify(features)
        return self._guide.for_options(class_logits, options)

    def _classify(self, features):
        """The images' ImageNet logits (N, 1000) from their features, through the torch
        encoder's classifier (the runtime gets them from its ONNX encoder instead)."""
        if self.model is None:
            raise CaptionError(
                "classifier guidance needs the images' class logits: caption "
                "images, or give class_logits with the features"
            )
        if self._classifier is None:
            from rnncap.models.encoders import build_encoder

            self._classifier = build_encoder(self.config.encoder).to(self.device).classify
        return self._classifier(features)

    def caption_feature_batches(
        self,
        features,
        options: DecodeOptions | None = None,
        batch_size: int = 100,
        progress: bool = False,
    ) -> list[Caption]:
        """`caption_features` over many images' features (I, ...), `batch_size` at a time."""
        from tqdm import tqdm

        options = options or self.options
        captions: list[Caption] = []
        starts = range(0, len(features), batch_size)
        desc = f"beam {options.beam_size}"
        for start in tqdm(starts, desc=desc, unit="batch", disable=not progress, file=sys.stderr):
            captions += self.caption_features(features[start : start + batch_size], options)
        return captions

    # ------------------------------------------------------------------ images -> captions
    def preprocess(self, image: Image.Image):
        """An RGB PIL image -> the encoder's input (3, S, S)."""
        if self.model is None:
            return self.encoder.pixels(image)
        return self.model.encoder.preprocess(image)

    @_inference
    def caption_images(
        self,
        images,
        names: Sequence[str] | None = None,
        options: DecodeOptions | None = None,
    ) -> list[Caption]:
        """Preprocessed images (N, 3, S, S) -> a `Caption` each: one encoder call, one search."""
        if self.model is None:
            features, logits = self.encoder.run_with_classes(np.asarray(images, np.float32))
            return self.caption_features(features, options, names, class_logits=logits)
        return self.caption_features(self.encode_images(images), options, names)

    @_inference
    def encode_images(self, images):
        """Preprocessed images (N, 3, S, S) -> encoder features (N, C, h, w) or (N, C)."""
        return self.model.encode(images.to(self.device, non_blocking=True))

    def __call__(
        self, x, *, beam: int | None = None, max_length: int | None = None
    ) -> Caption | list[Caption]:
        """Caption one image, or a list of them (as one batch).

        An image is a file path (str or Path), a PIL image, a NumPy (H, W, 3) uint8 array or the
        bytes of an image file. Raises CaptionError naming the item that cannot be used.
        """
        options = self.decode_options(beam, max_length)
        if isinstance(x, list | tuple):
            if not x:
                return []
            images = [self._to_pil(item, f"item {i}") for i, item in enumerate(x)]
            names = [name_of(item) for item in x]
        else:
            images, names = [self._to_pil(x, "input")], [name_of(x)]
        batch = stack([self.preprocess(image) for image in images])  # (N, 3, S, S)
        captions = self.caption_images(batch, names, options)
        return captions if isinstance(x, list | tuple) else captions[0]

    _to_pil = staticmethod(to_pil)

    # ------------------------------------------------------------------ many files
    def caption_files(
        self,
        paths: Sequence[str | os.PathLike],
        progress: bool = True,
        batch_size: int = 32,
        workers: int | None = None,
        beam: int | None = None,
        max_length: int | None = None,
        device_decode: bool = True,
    ) -> Iterator[Caption | Failed]:
        """Caption image files, yielding one `Caption` or `Failed` per path, in the input order.

        `workers` DataLoader processes open and preprocess the images (0: in this process; None:
        the cores the model leaves free, `rnncap.utils.device.decode_workers`) while this one
        runs the encoder and the beam search on batches of `batch_size` images
        (`rnncap.decode.loader`). On CUDA with `device_decode` the stages overlap
        (`rnncap.decode.pipeline`): `workers` threads read the files ahead, JPEGs are decoded
        and preprocessed on the GPU (`rnncap.data.gpu_images`; other files take the PIL path)
        and encoded in background threads on their own CUDA streams, and each beam search
        takes several encoder batches. The runtime (no torch) reads the next batch in a thread
        and searches two encoder batches at once (`rnncap.decode.runtime`); `workers` is unused.
        """

        from rnncap.utils.device import decode_workers

        if batch_size < 1:
            raise ConfigError("batch_size", f"must be at least 1, got {batch_size}")
        options = self.decode_options(beam, max_length)
        if self.model is None:
            from rnncap.decode.runtime import caption_file_batches

            groups = caption_file_batches(self, paths, options, batch_size)
            yield from flatten(groups, len(paths), progress)
            return
        workers = decode_workers(workers, self.device)
        on_device = getattr(self.model.encoder, "device_preprocess", True)  # False: PIL only
        if device_decode and self.device.type == "cuda" and on_device:
            from rnncap.decode.pipeline import caption_stream

            groups = caption_stream(self, paths, options, batch_size, workers)
        else:
            from rnncap.decode.loader import loader_groups

            groups = loader_groups(self, paths, options, batch_size, workers)
        yield from flatten(groups, len(paths), progress)
