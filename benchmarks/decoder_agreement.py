"""How often the NumPy decoder (captioning without torch) changes a caption: cached encoder
features captioned by the torch decoder and by the NumPy one, same model, same beam search, the
model's own decoding settings (classifier guidance from the torch classifier's logits, given to
both).

Prints the share of identical captions, the largest score difference and the images whose
captions differ, and the seconds each decoder took.

Usage: python benchmarks/decoder_agreement.py [--features cache/features] [--limit 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from rnncap.data.features import FeatureCache
from rnncap.decode.captioner import Captioner, load
from rnncap.models.encoders import build_encoder
from rnncap.models.files import resolve_model_dir
from rnncap.models.numpy_decoder import NumpyDecoder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="cache/features", help="feature cache folder")
    parser.add_argument("--limit", type=int, default=1000, help="images at most")
    parser.add_argument("--model", default="default", help="model spec (default: default)")
    parser.add_argument("--batch-size", type=int, default=50, help="images per search")
    args = parser.parse_args()
    torch_captioner = load(args.model, device="cpu", backend="torch")
    config = torch_captioner.config
    if not Path(args.features).is_dir():
        print(f"no feature cache at {args.features}: nothing to compare")
        return 0
    cache = FeatureCache(args.features, config.encoder)
    keys = sorted(cache.entries)[: args.limit]
    features = cache.get_keys(keys).float()  # (I, C, h, w)
    decoder = NumpyDecoder.from_folder(resolve_model_dir(args.model), config)
    numpy_captioner = Captioner(
        None, torch_captioner.vocab, torch_captioner.options, decoder=decoder
    )
    classifier = build_encoder(config.encoder).classify
    times, results = {}, {}
    for name, captioner in (("torch", torch_captioner), ("numpy", numpy_captioner)):
        start, captions = time.perf_counter(), []
        for i in range(0, len(features), args.batch_size):
            batch = features[i : i + args.batch_size]
            logits = classifier(batch).numpy()
            given = batch if name == "torch" else batch.numpy()
            captions += captioner.caption_features(given, class_logits=logits)
        times[name], results[name] = time.perf_counter() - start, captions
    pairs = list(zip(keys, results["torch"], results["numpy"], strict=True))
    differ = [(k, a.text, b.text) for k, a, b in pairs if a.text != b.text]
    same = len(pairs) - len(differ)
    score_diff = max(abs(a.score - b.score) for _, a, b in pairs)
    print(f"model {args.model}, {len(pairs)} cached images, options {torch_captioner.options}")
    print(
        f"identical captions torch vs numpy decoder: {same}/{len(pairs)} = "
        f"{same / len(pairs):.1%}; largest score difference {score_diff:.1e}"
    )
    print(
        f"seconds: torch {times['torch']:.1f}, numpy {times['numpy']:.1f} "
        f"({torch.get_num_threads()} torch threads)"
    )
    for key, a, b in differ:
        print(f"  {key}: torch {a!r} | numpy {b!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
