"""Write a trained model as a small model folder: int8 weights (blocks of 64 with float16 scales),
its decoding settings and its image encoder as encoder.onnx (float32, the ImageNet classifier's
weights float16).

    python scripts/bundle_model.py runs/scst/best runs/my-model \\
        --decoding '{"beam_size": 3, "length_penalty": 0.7, "no_repeat_ngram": 2}'

Given several models (runs fine-tuned from the same starting model), it writes the mean of
their weights (`rnncap.models.soup`), with each one's training record under "averaged":

    python scripts/bundle_model.py runs/scst/best runs/scst-cosine/best runs/bundle

`--lm DIR` and `--source-lm DIR` add language models trained by `rnncap lm --vocab` on the
model's vocabulary (float16), fused at decoding time by the weights in --decoding.

The settings are validated as `DecodeOptions`; `rnncap.load`, every command and the web service
then use them with no flags. The encoder is exported as `rnncap export` does it (checked against
torch, its SHA-256 recorded in config.json), so the folder captions without torch
(`rnncap.load(folder, backend="runtime")`); `--no-encoder` leaves it out, and the ONNX backend
then exports one into the user cache on first use.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rnncap.decode.beam import DecodeOptions
from rnncap.models.encoder_export import export_into
from rnncap.models.folder import read_config, save_model
from rnncap.models.soup import average_models
from rnncap.models.weight_store import STORAGES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model folder(s) or run folder(s) (their best/)")
    parser.add_argument("out", help="the folder to write")
    parser.add_argument("--decoding", default="{}", help="JSON DecodeOptions for the model")
    parser.add_argument(
        "--weights",
        choices=STORAGES,
        default="int8",
        help="how model.safetensors stores the decoder (default: int8, a quarter of float32)",
    )
    parser.add_argument(
        "--classifier-float32",
        action="store_true",
        help="keep the encoder's ImageNet classifier in float32 (default: float16 weights)",
    )
    parser.add_argument("--lm", help="language model folder (`rnncap lm`): the folder's lm/")
    parser.add_argument("--source-lm", help="language model folder: the folder's source_lm/")
    parser.add_argument(
        "--no-encoder",
        action="store_true",
        help="write no encoder.onnx (the folder then needs torch to export one on first use)",
    )
    args = parser.parse_args()
    decoding = DecodeOptions.from_dict(json.loads(args.decoding)).to_dict()
    model, vocab, folders = average_models(args.models)
    infos = [read_config(folder).get("info", {}) for folder in folders]
    info = infos[0] if len(infos) == 1 else {"averaged": infos}
    save_model(args.out, model, vocab, weights=args.weights, extra=info, decoding=decoding)
    for name, folder in (("lm", args.lm), ("source_lm", args.source_lm)):
        if folder:
            _add_language_model(folder, Path(args.out) / name, vocab)
    what = "weights" if len(folders) == 1 else f"the mean of {len(folders)} models' weights"
    print(f"wrote {args.out}: {what} in {args.weights}, decoding {json.dumps(decoding)}")
    if not args.no_encoder:
        print(export_into(Path(args.out), classifier_float16=not args.classifier_float32))


def _add_language_model(folder: str, out: Path, vocab) -> None:
    """Copy a language model into the model folder, its weights in float16; it must use the
    captioner's vocabulary."""
    from rnncap.engine.lm_train import History, LMTrainConfig, save
    from rnncap.models.fusion import language_model_for

    model = language_model_for(folder, vocab)  # refused unless trained with --vocab
    trained = read_config(folder)
    config = LMTrainConfig(model=model.config)
    for key in ("epochs", "batch_size", "lr", "clip", "min_count", "seed"):
        setattr(config, key, trained.get(key, getattr(config, key)))
    save(model.half(), vocab, config, History(), out)


if __name__ == "__main__":
    main()
