"""Caption a data set split with a saved model and score it with the COCO caption metrics.

Features come from a feature cache (`--features`, built on demand) or are computed into a
temporary one, so training and evaluation see the same float16 encoder outputs.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass

import torch
from tqdm import tqdm

from rnncap.decode.pipeline import caption_features


@dataclass
class EvalConfig:
    model: str = "default"  # "default" | model folder | run folder
    data: str = ""  # data set root
    format: str = "flickr8k"  # flickr8k | coco | karpathy
    split: str = "test"
    beam: int = 3  # 1 = greedy
    length_penalty: float = 0.0
    max_length: int | None = None  # None: the model's own
    features: str | None = None  # feature cache folder; None: a temporary one
    batch_size: int = 100  # images decoded at once
    workers: int = 2  # image-decoding processes when features are computed
    device: str = "auto"
    limit: int = 0  # first N images only (0: all)
    progress: bool = True


def split_features(model, samples, cache_dir: str | None, device, workers: int, progress: bool):
    """Encoder features (I, ...) float16 for the samples' images, through a feature cache."""
    from rnncap.data.features import FeatureCache, build_cache

    def compute(root: str) -> torch.Tensor:
        cache = FeatureCache(root, model.config.encoder)
        paths = [s.image for s in samples]
        stats = build_cache(
            paths, model.encoder, cache, device=device, workers=workers, progress=progress
        )
        if stats.failed:
            raise ValueError(f"{len(stats.failed)} image(s) could not be read: {stats.failed[0]}")
        return cache.get(paths)

    if cache_dir is not None:
        return compute(cache_dir)
    with tempfile.TemporaryDirectory(prefix="rnncap-features-") as tmp:
        return compute(tmp)


@torch.no_grad()
def caption_in_batches(model, vocab, features, beam: int, batch_size: int, length_penalty=0.0,
                       max_length=None, progress=True):  # fmt: skip
    """features (I, ...) -> (captions, scores) lists, decoded `batch_size` images at a time."""
    device = next(model.parameters()).device
    captions, scores = [], []
    starts = range(0, len(features), batch_size)
    for start in tqdm(
        starts, desc=f"beam {beam}", unit="batch", disable=not progress, file=sys.stderr
    ):
        batch = features[start : start + batch_size].to(device).float()
        for caption, score, _ in caption_features(
            model, vocab, batch, beam, max_length=max_length, length_penalty=length_penalty
        ):
            captions.append(caption)
            scores.append(score)
    return captions, scores


def evaluate(cfg: EvalConfig) -> dict:
    """-> {"scores": {...}, "predictions": [{"image", "caption", "score"}], "config": {...}}."""
    from dataclasses import asdict

    from rnncap.data.datasets import load_dataset
    from rnncap.engine.metrics import score
    from rnncap.models.folder import load_model
    from rnncap.utils.device import resolve_device

    device = resolve_device(cfg.device)
    model, vocab = load_model(cfg.model, device)
    samples = list(load_dataset(cfg.data, cfg.format, cfg.split))
    if cfg.limit:
        samples = samples[: cfg.limit]
    if not samples:
        raise ValueError(f"{cfg.data}: the {cfg.split} split has no images")
    features = split_features(model, samples, cfg.features, device, cfg.workers, cfg.progress)
    captions, scores = caption_in_batches(
        model, vocab, features, cfg.beam, cfg.batch_size, cfg.length_penalty, cfg.max_length,
        cfg.progress,
    )  # fmt: skip
    predictions = {s.name: c for s, c in zip(samples, captions, strict=True)}
    references = {s.name: list(s.captions) for s in samples}
    metrics = score(references, predictions)
    return {
        "config": asdict(cfg),
        "images": len(samples),
        "scores": metrics,
        "predictions": [
            {"image": s.name, "caption": c, "score": v}
            for s, c, v in zip(samples, captions, scores, strict=True)
        ],
    }


def format_table(scores: dict) -> str:
    names = list(scores)
    width = max(len(n) for n in names)
    return "\n".join(f"{n:<{width}}  {scores[n]:.3f}" for n in names)
