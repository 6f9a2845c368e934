"""Score model folders on cached features under several decoding settings: the table behind the
README's ablation and the decoding settings stored with the default model.

    python scripts/decoding_ablation.py --model runs/scst/best --features cache/features \\
        --set flickr8k:../shared/data/flickr8k:dev --set coco:../shared/data/coco_dev:dev \\
        --grid '[{"beam_size": 3}, {"beam_size": 3, "no_repeat_ngram": 2}]'

CIDEr is CIDEr-D computed in-process (equal to pycocoevalcap's); `--full` adds BLEU-4 and METEOR
through pycocoevalcap (Java). "repeats" counts captions that hold the same word pair twice.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from rnncap.data.datasets import load_dataset
from rnncap.data.features import FeatureCache
from rnncap.decode.beam import DecodeOptions
from rnncap.decode.captioner import Captioner
from rnncap.engine.cider import cider_d
from rnncap.models.folder import load_model


def repeats_a_word_pair(caption: str) -> bool:
    words = caption.split()
    pairs = list(zip(words, words[1:], strict=False))
    return len(pairs) != len(set(pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="model folder (repeat)")
    parser.add_argument(
        "--set",
        action="append",
        required=True,
        help="NAME:DATA_ROOT:SPLIT (format flickr8k, or coco when NAME starts with coco)",
    )
    parser.add_argument("--features", required=True, help="feature cache folder")
    parser.add_argument("--grid", default='[{"beam_size": 3}]', help="JSON list of settings")
    parser.add_argument("--full", action="store_true", help="BLEU-4 and METEOR too (Java)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--lm",
        help="language model folder (`rnncap lm`) for lm_weight; default: the model folder's lm/",
    )
    parser.add_argument(
        "--source-lm",
        help="language model folder for source_lm_weight; default: the model folder's source_lm/",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = [DecodeOptions(**options) for options in json.loads(args.grid)]
    for spec in args.model:
        model, vocab = load_model(spec)
        lms = _language_models(spec, vocab, args)
        for name, root, split in (s.split(":") for s in args.set):
            samples = list(
                load_dataset(root, "coco" if name.startswith("coco") else "flickr8k", split)
            )
            cache = FeatureCache(args.features, model.config.encoder)
            features, names = cache.load_split(samples)
            references = {s.name: list(s.captions) for s in samples}
            for options in grid:
                start = time.time()
                captioner = Captioner(model, vocab, options, language_models=lms)
                results = captioner.caption_feature_batches(features)
                predictions = dict(zip(names, (r.text for r in results), strict=True))
                row = {"model": spec, "set": name, **options.to_dict()}
                row["CIDEr"] = round(cider_d(references, predictions), 4)
                if args.full:
                    from rnncap.engine.metrics import score

                    full = score(references, predictions, metrics=("BLEU", "METEOR"))
                    row.update({k: round(full[k], 4) for k in ("BLEU-4", "METEOR")})
                row["repeats"] = sum(map(repeats_a_word_pair, predictions.values()))
                row["words"] = round(
                    sum(len(p.split()) for p in predictions.values()) / len(predictions), 2
                )
                row["seconds"] = round(time.time() - start, 1)
                print(json.dumps(row), flush=True)


def _language_models(spec: str, vocab, args) -> dict:
    from rnncap.models.folder import resolve_model_dir
    from rnncap.models.fusion import language_model_for, load_language_models

    lms = load_language_models(resolve_model_dir(spec), vocab, "cpu")
    for name, folder in (("lm", args.lm), ("source_lm", args.source_lm)):
        if folder:
            lms[name] = language_model_for(folder, vocab)
    return lms


if __name__ == "__main__":
    main()
