"""Is a difference between two models real? The paired bootstrap over images (Koehn 2004), and
the standard error of one model's score.

Both models caption the same images; each caption gets its own score (CIDEr-D per image,
`rnncap.engine.cider.CiderD.score`, whose mean is the corpus score). Resampling the images with
replacement, the same draw for both models, gives the spread of the difference of the means that
another set of images of the same kind would show. The document frequencies stay those of the
whole set, the usual approximation: the corpus score of a resampled set would recount them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedBootstrap:
    mean_a: float  # mean score of model A over the images
    mean_b: float
    diff: float  # mean_b - mean_a
    stderr: float  # standard deviation of the resampled differences
    low: float  # the central 95% of the resampled differences
    high: float
    stderr_a: float  # standard deviation of A's resampled mean (the error of one model's score)
    b_better: float  # share of resamples in which B scores higher than A


def paired_bootstrap(
    scores_a, scores_b, samples: int = 10_000, seed: int = 0, chunk: int = 1_000
) -> PairedBootstrap:
    """Per-image scores of two models on the same images, in the same order -> PairedBootstrap."""
    a = np.asarray(scores_a, dtype=np.float64).reshape(-1)  # (N,)
    b = np.asarray(scores_b, dtype=np.float64).reshape(-1)  # (N,)
    if len(a) != len(b):
        raise ValueError(f"{len(a)} scores for model A and {len(b)} for model B: pair them")
    if len(a) == 0:
        raise ValueError("no scores to resample")
    if samples < 2:
        raise ValueError(f"samples must be at least 2, got {samples}")
    rng = np.random.default_rng(seed)
    diffs, means_a = [], []
    for start in range(0, samples, chunk):  # (chunk, N) indices at a time, not (samples, N)
        idx = rng.integers(0, len(a), size=(min(chunk, samples - start), len(a)))
        means_a.append(a[idx].mean(axis=1))
        diffs.append((b[idx] - a[idx]).mean(axis=1))
    diff = np.concatenate(diffs)  # (samples,)
    low, high = np.percentile(diff, [2.5, 97.5])
    return PairedBootstrap(
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        diff=float(b.mean() - a.mean()),
        stderr=float(diff.std()),
        low=float(low),
        high=float(high),
        stderr_a=float(np.concatenate(means_a).std()),
        b_better=float((diff > 0).mean()),
    )


def standard_error(per_image) -> float | None:
    """The standard error of a mean score over images (sample std / sqrt(N)): how far the score
    of one model would move on another set of images of the same kind. None for fewer than 2."""
    scores = np.asarray(per_image, dtype=np.float64).reshape(-1)  # (N,)
    if len(scores) < 2:
        return None
    return float(scores.std(ddof=1) / np.sqrt(len(scores)))
