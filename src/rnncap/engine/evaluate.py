"""Caption a data set split with a saved model and score it with the COCO caption metrics.

Features come from a feature cache (`--features`, built on demand) or are computed into a
temporary one, so training and evaluation see the same float16 encoder outputs. The torch-free
runtime captions the image files as `rnncap caption` does instead. Scoring needs pycocoevalcap
and Java.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass

from rnncap.data.datasets import DatasetError
from rnncap.utils.config import ConfigError, check_range, check_types


@dataclass
class EvalConfig:
    model: str = "default"  # "default" | model folder | run folder
    data: str = ""  # data set root
    format: str = "flickr8k"  # flickr8k | coco | karpathy
    split: str = "test"
    beam: int | None = None  # None: the model's decoding setting; 1 = greedy
    length_penalty: float | None = None  # None: the model's decoding setting
    max_length: int | None = None  # None: the model's decoding setting
    features: str | None = None  # feature cache folder; None: a temporary one
    batch_size: int = 100  # images decoded at once
    workers: int | None = None  # image-decoding processes when features are computed (None: auto)
    device: str = "auto"
    backend: str = "auto"  # how the image encoder runs: auto | onnx | torch
    limit: int = 0  # first N images only (0: all)
    progress: bool = True
    score: bool = True  # False: captions only ("scores" None; no pycocoevalcap, no Java)

    def __post_init__(self) -> None:
        """Types and ranges; a ConfigError names the bad field."""
        from rnncap.data.datasets import list_formats
        from rnncap.decode.beam import MAX_BEAM

        check_types(self)
        if self.format not in list_formats():
            raise ConfigError(
                "format", f"must be one of {', '.join(list_formats())}, got {self.format!r}"
            )
        if self.split not in ("train", "dev", "test"):
            raise ConfigError("split", f"must be train, dev or test, got {self.split!r}")
        if self.beam is not None:
            check_range("beam", self.beam, 1, MAX_BEAM)
        if self.length_penalty is not None and self.length_penalty < 0:
            raise ConfigError("length_penalty", f"must be >= 0, got {self.length_penalty}")
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError("max_length", f"must be at least 1, got {self.max_length}")
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be at least 1, got {self.batch_size}")
        if self.limit < 0 or (self.workers is not None and self.workers < 0):
            name = "limit" if self.limit < 0 else "workers"
            raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")


def split_features(
    model, samples, cache_dir: str | None, device, workers: int | None, progress: bool
):
    """Encoder features (I, ...) float16 for the samples' images, through a feature cache."""
    from rnncap.data.features import FeatureCache, build_cache

    def compute(root: str):
        cache = FeatureCache(root, model.config.encoder)
        paths = [s.image for s in samples]
        stats = build_cache(
            paths, model.encoder, cache, device=device, workers=workers, progress=progress
        )
        _check_read(stats.failed)
        return cache.get(paths)

    if cache_dir is not None:
        return compute(cache_dir)
    with tempfile.TemporaryDirectory(prefix="rnncap-features-") as tmp:
        return compute(tmp)


def runtime_captions(captioner, samples, options, batch_size: int, progress: bool) -> list:
    """The torch-free runtime's captions of the samples' image files, as `rnncap caption` makes
    them: float32 features with the ImageNet logits of classifier guidance, both from the
    encoder.onnx graph (the cache keeps no logits, and the runtime has no classifier of its own
    to compute them from features)."""
    from rnncap.decode.captioner import Failed
    from rnncap.decode.inputs import flatten
    from rnncap.decode.runtime import caption_file_batches

    paths = [s.image for s in samples]
    groups = caption_file_batches(captioner, paths, options, batch_size)
    results = list(flatten(groups, len(paths), progress))
    _check_read([r.reason for r in results if isinstance(r, Failed)])
    return results


def _check_read(failed: list[str]) -> None:
    if failed:
        raise DatasetError(f"{len(failed)} image(s) could not be read: {failed[0]}")


def evaluate(cfg: EvalConfig) -> dict:
    """-> {"scores": {...} | None, "cider_stderr": float | None, "predictions": [{"image",
    "caption", "score"}], "config": {...}}; "scores" and "cider_stderr" (one standard error of
    CIDEr over the images) are None when `cfg.score` is False."""
    from dataclasses import asdict

    from rnncap.data.datasets import load_dataset
    from rnncap.decode.captioner import load
    from rnncap.engine.metrics import check_java, score

    if cfg.score:
        check_java()  # METEOR and the PTB tokenizer run on Java: fail before encoding anything
    captioner = load(cfg.model, cfg.device, backend=cfg.backend)
    options = captioner.decode_options(cfg.beam, cfg.max_length)
    if cfg.length_penalty is not None:
        options = dataclasses.replace(options, length_penalty=cfg.length_penalty)
    samples = list(load_dataset(cfg.data, cfg.format, cfg.split))
    if cfg.limit:
        samples = samples[: cfg.limit]
    if not samples:
        raise DatasetError(f"{cfg.data}: the {cfg.split} split has no images")
    if captioner.model is None:
        results = runtime_captions(captioner, samples, options, cfg.batch_size, cfg.progress)
    else:
        features = split_features(
            captioner.model, samples, cfg.features, captioner.device, cfg.workers, cfg.progress
        )
        results = captioner.caption_feature_batches(features, options, cfg.batch_size, cfg.progress)
    captions = [r.text for r in results]
    scores = [r.score for r in results]
    predictions = {s.name: c for s, c in zip(samples, captions, strict=True)}
    references = {s.name: list(s.captions) for s in samples}
    metrics = score(references, predictions) if cfg.score else None
    return {
        "config": {**asdict(cfg), **_resolved(options)},
        "images": len(samples),
        "scores": metrics,
        "cider_stderr": cider_stderr(references, predictions) if cfg.score else None,
        "predictions": [
            {"image": s.name, "caption": c, "score": v}
            for s, c, v in zip(samples, captions, scores, strict=True)
        ],
    }


def cider_stderr(references: dict, predictions: dict) -> float | None:
    """One standard error of the CIDEr score over the images (CIDEr-D per image, in-process;
    its mean is pycocoevalcap's CIDEr)."""
    from rnncap.engine.bootstrap import standard_error
    from rnncap.engine.cider import cider_d_per_image

    return standard_error(cider_d_per_image(references, predictions))


def _resolved(options) -> dict:
    """The decoding settings actually used, under EvalConfig's names."""
    return {
        "beam": options.beam_size,
        "length_penalty": options.length_penalty,
        "max_length": options.max_length,
    }


def format_table(scores: dict, stderr: float | None = None) -> str:
    """One line per metric; CIDEr with its standard error over the images when given."""
    names = list(scores)
    width = max(len(n) for n in names)
    lines = [f"{n:<{width}}  {scores[n]:.3f}" for n in names]
    if stderr is not None and "CIDEr" in scores:
        lines[names.index("CIDEr")] += f" +- {stderr:.3f} (one standard error over images)"
    return "\n".join(lines)
