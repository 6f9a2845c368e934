"""CIDEr-D written out directly from its definition: the reference the vectorised scorer
(`rnncap.engine.cider`) and the scores built on it are tested against."""

from __future__ import annotations

import math
from collections import Counter


def brute_force_cider_d(
    refs: list[list[list[str]]], cands: list[list[str]], n: int = 4, sigma: float = 6.0
) -> list[float]:
    """CIDEr-D written out directly from its definition (pycocoevalcap's conventions)."""

    def counts(tokens: list[str]) -> Counter:
        return Counter(
            tuple(tokens[i : i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1)
        )

    df: Counter = Counter()
    for image_refs in refs:
        for gram in set().union(*(counts(r) for r in image_refs)):
            df[gram] += 1
    log_images = math.log(len(refs))

    def vector(tokens: list[str], k: int) -> dict:
        return {
            g: tf * (log_images - math.log(max(1.0, df[g])))
            for g, tf in counts(tokens).items()
            if len(g) == k
        }

    def length(tokens: list[str]) -> int:  # pycocoevalcap counts bigrams
        return max(len(tokens) - 1, 0)

    scores = []
    for image_refs, cand in zip(refs, cands, strict=True):
        total = 0.0
        for ref in image_refs:
            penalty = math.exp(-((length(cand) - length(ref)) ** 2) / (2 * sigma**2))
            for k in range(1, n + 1):
                h, r = vector(cand, k), vector(ref, k)
                dot = sum(min(v, r.get(g, 0.0)) * r.get(g, 0.0) for g, v in h.items())
                norms = math.sqrt(sum(v * v for v in h.values())) * math.sqrt(
                    sum(v * v for v in r.values())
                )
                total += (dot / norms if norms else 0.0) * penalty
        scores.append(10.0 * total / n / len(image_refs))
    return scores
