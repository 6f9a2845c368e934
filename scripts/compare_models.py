"""Two models on the same images: each one's CIDEr-D, their difference, and how far that
difference would move on another set of images of the same kind (paired bootstrap over images,
`rnncap.engine.bootstrap`). Each model decodes with its own settings (its config.json).

    python scripts/compare_models.py runs/old src/rnncap/assets/default --features cache/features \\
        --set flickr8k:../shared/data/flickr8k:dev --set coco:../shared/data/coco_dev:dev

Prints one JSON line per set, then a table.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from rnncap.data.datasets import load_dataset
from rnncap.data.features import FeatureCache
from rnncap.decode.captioner import load
from rnncap.engine.bootstrap import paired_bootstrap
from rnncap.engine.cider import cider_d_per_image
from rnncap.utils.errors import RnncapError


def per_image_cider(spec: str, samples: list, features_dir: str) -> np.ndarray:
    """CIDEr-D of each image's caption by the model at `spec` (its own decoding settings and
    language models), in the order of `samples`."""
    captioner = load(spec, "cpu", backend="torch")
    cache = FeatureCache(features_dir, captioner.config.encoder)
    features, names = cache.load_split(samples)
    results = captioner.caption_feature_batches(features)
    caption = dict(zip(names, (r.text for r in results), strict=True))
    references = {s.name: list(s.captions) for s in samples}
    return cider_d_per_image(references, caption)  # (N,)


def data_split(spec: str) -> tuple[str, str, str]:
    """--set NAME:DATA_ROOT:SPLIT -> (name, root, split), or a one-line argparse error."""
    parts = spec.split(":")
    if len(parts) != 3 or not all(parts) or parts[2] not in ("train", "dev", "test"):
        raise argparse.ArgumentTypeError(
            f"{spec!r} is not NAME:DATA_ROOT:SPLIT with SPLIT train, dev or test"
        )
    return parts[0], parts[1], parts[2]


def compare(args) -> list[dict]:
    """One row per --set: the paired bootstrap of model B against model A, printed as JSON."""
    rows = []
    for name, root, split in args.sets:
        samples = list(load_dataset(root, "coco" if name.startswith("coco") else "flickr8k", split))
        a, b = (per_image_cider(m, samples, args.features) for m in (args.model_a, args.model_b))
        result = paired_bootstrap(a, b, samples=args.samples)
        row = {"set": f"{name} {split}", "images": len(samples), **vars(result)}
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_a", help="model folder A (the reference)")
    parser.add_argument("model_b", help="model folder B (the candidate)")
    parser.add_argument(
        "--set",
        dest="sets",
        type=data_split,
        action="append",
        required=True,
        metavar="NAME:DATA_ROOT:SPLIT",
        help="a split to score on, repeatable (a NAME starting with coco reads COCO JSON)",
    )
    parser.add_argument("--features", required=True, help="feature cache folder")
    parser.add_argument("--samples", type=int, default=10_000, help="bootstrap resamples")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        rows = compare(args)
    except (RnncapError, OSError) as error:  # a missing model, data set or feature: one line
        parser.exit(2, f"compare_models.py: error: {error}\n")
    print(f"\nA = {args.model_a}, B = {args.model_b}; CIDEr-D, +- one standard error\n")
    print("| set | images | A | B | B - A | 95% of resamples | B ahead in |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['set']} | {r['images']} | {r['mean_a']:.3f} +- {r['stderr_a']:.3f} "
            f"| {r['mean_b']:.3f} | {r['diff']:+.3f} +- {r['stderr']:.3f} "
            f"| {r['low']:+.3f} .. {r['high']:+.3f} | {100 * r['b_better']:.0f}% |"
        )


if __name__ == "__main__":
    main()
