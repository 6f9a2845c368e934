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
import torch
from PIL import Image

from rnncap.data.images import (
    ImageError,
    ImageFiles,
    collate_images,
    decode_image_bytes,
    open_image,
    to_rgb,
)
from rnncap.decode.beam import DecodeOptions, decode
from rnncap.utils.config import ConfigError
from rnncap.utils.errors import RnncapError


class CaptionError(RnncapError, ValueError):
    """An input that cannot be captioned; the message names the item (its path, or its index)."""


@dataclass
class Caption:
    """One image's caption."""

    text: str
    score: float  # sum of the words' log-probabilities (divided by length**a with a penalty a)
    words: list[str]  # the caption's words, one per attention row
    attention: torch.Tensor | None  # (L, P) float32 on the CPU: weights behind each word (attn)
    grid: tuple[int, int] | None  # (h, w) of the encoder's feature grid, P = h * w
    image: str | None = None  # the file (or upload name) it came from, when there is one


@dataclass
class Failed:
    """An image of `caption_files` that could not be captioned; `reason` names the file."""

    image: str
    reason: str


def load(
    model: str | os.PathLike = "default",
    device: str | torch.device = "auto",
    backend: str | None = "auto",
) -> Captioner:
    """A `Captioner` for a model folder ("default": the bundled model, or a run folder).

    device: "auto" (CUDA when available), "cpu", "cuda", "cuda:N" or a torch.device.
    backend: how the image encoder runs: "onnx" (ONNX Runtime, CPU only), "torch", or "auto"
    (the default; None means the same): onnx on a CPU when onnxruntime is installed, else torch.
    The decoder runs in torch either way. The ONNX graph is the model folder's encoder.onnx
    (`rnncap export`) or one exported into the user cache on first use.
    Decoding defaults come from the folder's config.json "decoding" entry when it has one.
    A Show-and-Tell folder (`rnncap convert-show-tell`) runs its encoder in torch.
    """
    from rnncap.models.folder import load_model, resolve_model_dir
    from rnncap.models.onnx_encoder import resolve_backend
    from rnncap.models.showtell_folder import is_show_tell
    from rnncap.utils.device import resolve_device

    device = resolve_device(device) if isinstance(device, str) else device
    resolve_backend(backend or "auto", device)  # a bad name or device fails before any loading
    folder = resolve_model_dir(model)
    options = _folder_options(folder)
    if is_show_tell(folder):
        return _show_tell_captioner(folder, options, backend, device, str(model))
    network, vocab = load_model(folder, device)
    from rnncap.models.fusion import load_language_models

    return Captioner(
        network, vocab, options, backend=backend or "auto", name=str(model), folder=folder,
        language_models=load_language_models(folder, vocab, device),
    )  # fmt: skip


def _folder_options(folder) -> DecodeOptions:
    """The model folder's config.json "decoding" entry (absent: the defaults)."""
    from rnncap.models.folder import CONFIG, read_config
    from rnncap.utils.io import InvalidFileError

    try:
        return DecodeOptions.from_dict(read_config(folder).get("decoding", {}))
    except ConfigError as error:
        raise InvalidFileError(folder / CONFIG, error.reason, f"decoding.{error.field}") from None


# Options that need an rnncap vocabulary, classifier or language model beside the decoder.
_NOT_FOR_SHOW_TELL = ("guidance", "no_end_after", "lm_weight", "source_lm_weight")


def _show_tell_captioner(folder, options: DecodeOptions, backend, device, name: str):
    """A `Captioner` of a Show-and-Tell folder; its encoder runs in torch ("onnx" is refused)."""
    from rnncap.models.folder import CONFIG
    from rnncap.models.onnx_encoder import BackendError
    from rnncap.models.showtell_folder import load_show_tell_folder
    from rnncap.utils.io import InvalidFileError

    if backend == "onnx":
        raise BackendError("a Show-and-Tell model's encoder runs in torch only")
    for field in _NOT_FOR_SHOW_TELL:
        if getattr(options, field) != getattr(DecodeOptions(), field):
            raise InvalidFileError(
                folder / CONFIG, "not available to a Show-and-Tell model", f"decoding.{field}"
            )
    model = load_show_tell_folder(folder, device)
    return Captioner(model, model.vocab, options, backend=None, name=name, folder=folder)


class Captioner:
    """A captioning model ready to use: call it on images, or on encoder features.

    model: a `CaptioningRNN` (or a `ShowTell`) in eval mode, on its device; vocab: its
    `Vocabulary`;
    options: the default `DecodeOptions` (each call may override beam and max_length);
    backend: "auto", "onnx" or "torch" swaps the model's image encoder accordingly (see `load`),
    None leaves it alone; `self.backend` is the one in use. folder: the model folder, where an
    exported encoder.onnx is looked for first.
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
    ) -> None:
        from rnncap.models.onnx_encoder import use_backend

        self.model = model
        self.vocab = vocab
        self.options = options or DecodeOptions()
        if backend is not None:  # None: keep the model's encoder as it is
            use_backend(model, backend, folder)
        self.name = name
        self._guide = None  # classifier guidance, built on first use
        # "lm" / "source_lm" -> a LanguageModel fused at decoding time (rnncap.models.fusion)
        self.language_models = dict(language_models or {})

    @property
    def backend(self) -> str:
        """How the image encoder runs: "onnx" (ONNX Runtime) or "torch"."""
        from rnncap.models.onnx_encoder import current_backend

        return current_backend(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def config(self):
        """The model's `CaptionerConfig` (encoder, cell type, sizes)."""
        return self.model.config

    def decode_options(
        self, beam: int | None = None, max_length: int | None = None
    ) -> DecodeOptions:
        """The held options, with `beam` and `max_length` replaced when given."""
        changes = {"beam_size": beam, "max_length": max_length}
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self.options, **changes) if changes else self.options

    # ------------------------------------------------------------------ features -> captions
    @torch.inference_mode()
    def caption_features(
        self,
        features: torch.Tensor,
        options: DecodeOptions | None = None,
        names: Sequence[str] | None = None,
    ) -> list[Caption]:
        """Encoder features (N, C, h, w) or (N, C) -> a `Caption` per image (one batched search)."""
        features = features.to(self.device, non_blocking=True).float()
        options = options or self.options
        bonus, no_end = self._word_bonus(features, options), self._no_end_after(options)
        decoded = decode(self._decoder(options), features, options, bonus, no_end)
        grid = tuple(features.shape[2:4]) if features.dim() == 4 else None
        attention = decoded.attention or [None] * len(decoded.tokens)
        names = names if names is not None else [None] * len(decoded.tokens)
        return [
            Caption(
                text=self.vocab.decode(tokens),
                score=float(score),
                words=[self.vocab.itos[t] for t in tokens],
                attention=weights.float() if weights is not None else None,
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
            return self.model
        from rnncap.models.fusion import FusedDecoder, fusion_terms

        try:
            terms = fusion_terms(self.language_models, options.lm_weight, options.source_lm_weight)
        except ConfigError as error:
            raise CaptionError(f"{self.name or 'model'}: {error}") from None
        return FusedDecoder(self.model, [(lm.to(self.device), w) for lm, w in terms])

    def _no_end_after(self, options: DecodeOptions) -> torch.Tensor | None:
        """(V,) bool: the vocabulary's ids of the words a caption may not end on, or None."""
        if not options.no_end_after:
            return None
        mask = torch.zeros(len(self.vocab), dtype=torch.bool)
        ids = [self.vocab.stoi[w] for w in options.no_end_after if w in self.vocab.stoi]
        mask[ids] = True
        return mask

    def _word_bonus(self, features: torch.Tensor, options: DecodeOptions):
        """Classifier guidance's per-image word bonus (N, V), or None when it is off."""
        if options.guidance <= 0:
            return None
        if self._guide is None:
            from rnncap.models.encoders import build_encoder
            from rnncap.models.guidance import ClassifierGuide

            encoder = build_encoder(self.config.encoder).to(self.device)  # its classifier
            self._guide = ClassifierGuide(encoder.classify, self.vocab.stoi, len(self.vocab))
        return self._guide.bonus(features, options.guidance, options.guidance_threshold)

    def caption_feature_batches(
        self,
        features: torch.Tensor,
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
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """An RGB PIL image -> the encoder's input (3, S, S)."""
        return self.model.encoder.preprocess(image)

    @torch.inference_mode()
    def caption_images(
        self,
        images: torch.Tensor,
        names: Sequence[str] | None = None,
        options: DecodeOptions | None = None,
    ) -> list[Caption]:
        """Preprocessed images (N, 3, S, S) -> a `Caption` each: one encoder call, one search."""
        return self.caption_features(self.encode_images(images), options, names)

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
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
            names = [_name(item) for item in x]
        else:
            images, names = [self._to_pil(x, "input")], [_name(x)]
        batch = torch.stack([self.preprocess(image) for image in images])  # (N, 3, S, S)
        captions = self.caption_images(batch, names, options)
        return captions if isinstance(x, list | tuple) else captions[0]

    @staticmethod
    def _to_pil(x, label: str) -> Image.Image:
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
        runs the encoder and the beam search on batches of `batch_size` images. On CUDA
        with `device_decode` the stages overlap (`rnncap.decode.pipeline`): `workers` threads
        read the files ahead, JPEGs are decoded and preprocessed on the GPU
        (`rnncap.data.gpu_images`; other files take the PIL path) and encoded in background
        threads on their own CUDA streams, and each beam search takes several encoder batches.
        """
        from tqdm import tqdm

        from rnncap.utils.device import decode_workers

        if batch_size < 1:
            raise ConfigError("batch_size", f"must be at least 1, got {batch_size}")
        options = self.decode_options(beam, max_length)
        workers = decode_workers(workers, self.device)
        on_device = getattr(self.model.encoder, "device_preprocess", True)  # False: PIL only
        if device_decode and self.device.type == "cuda" and on_device:
            from rnncap.decode.pipeline import caption_stream

            groups = caption_stream(self, paths, options, batch_size, workers)
        else:
            groups = self._loader_groups(paths, options, batch_size, workers)
        with tqdm(total=len(paths), unit="img", disable=not progress, desc="caption") as bar:
            for results in groups:
                for _, result in results:
                    yield result
                bar.update(len(results))

    def _loader_groups(self, paths, options: DecodeOptions, batch_size: int, workers: int):
        """[(index, Caption | Failed)] per batch, sorted: DataLoader processes decode the images
        with PIL, this one encodes and searches."""
        from torch.utils.data import DataLoader

        encoder = self.model.encoder  # built once here, before the workers fork
        loader = DataLoader(
            ImageFiles(paths, encoder.preprocess),
            batch_size=batch_size,
            num_workers=min(workers, -(-len(paths) // batch_size)),  # no idle workers
            collate_fn=collate_images,
            pin_memory=self.device.type == "cuda",
        )
        names = [str(p) for p in paths]
        for images, indices, bad in loader:
            results = [(i, Failed(names[i], message)) for message, i in bad]
            if images is not None:
                captions = self.caption_images(images, [names[i] for i in indices], options)
                results += list(zip(indices, captions, strict=True))
            yield sorted(results, key=lambda r: r[0])


def _name(x) -> str | None:
    return str(x) if isinstance(x, str | os.PathLike) else None
