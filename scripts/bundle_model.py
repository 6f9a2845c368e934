"""Write a trained model as a small model folder: float16 weights plus its decoding settings.

    python scripts/bundle_model.py runs/scst/best src/rnncap/assets/default \\
        --decoding '{"beam_size": 3, "length_penalty": 0.5, "no_repeat_ngram": 2}'

The settings are validated as `DecodeOptions`; `rnncap.load`, every command and the web service
then use them with no flags.
"""

from __future__ import annotations

import argparse
import json

import torch

from rnncap.decode.beam import DecodeOptions
from rnncap.models.folder import load_model, read_config, resolve_model_dir, save_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model folder or run folder (its best/)")
    parser.add_argument("out", help="the folder to write")
    parser.add_argument("--decoding", default="{}", help="JSON DecodeOptions for the model")
    args = parser.parse_args()
    decoding = DecodeOptions.from_dict(json.loads(args.decoding)).to_dict()
    source = resolve_model_dir(args.model)
    model, vocab = load_model(source)
    info = read_config(source).get("info", {})
    save_model(args.out, model, vocab, dtype=torch.float16, extra=info, decoding=decoding)
    print(f"wrote {args.out}: float16 weights, decoding {json.dumps(decoding)}")


if __name__ == "__main__":
    main()
