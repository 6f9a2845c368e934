"""Write a trained model as a small model folder: float16 weights plus its decoding settings.

    python scripts/bundle_model.py runs/scst/best src/rnncap/assets/default \\
        --decoding '{"beam_size": 3, "length_penalty": 0.5, "no_repeat_ngram": 2}'

Given several models (runs fine-tuned from the same starting model), it writes the mean of
their weights (`rnncap.models.soup`), with each one's training record under "averaged":

    python scripts/bundle_model.py runs/scst/best runs/scst-cosine/best runs/bundle

The settings are validated as `DecodeOptions`; `rnncap.load`, every command and the web service
then use them with no flags.
"""

from __future__ import annotations

import argparse
import json

import torch

from rnncap.decode.beam import DecodeOptions
from rnncap.models.folder import read_config, save_model
from rnncap.models.soup import average_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model folder(s) or run folder(s) (their best/)")
    parser.add_argument("out", help="the folder to write")
    parser.add_argument("--decoding", default="{}", help="JSON DecodeOptions for the model")
    args = parser.parse_args()
    decoding = DecodeOptions.from_dict(json.loads(args.decoding)).to_dict()
    model, vocab, folders = average_models(args.models)
    infos = [read_config(folder).get("info", {}) for folder in folders]
    info = infos[0] if len(infos) == 1 else {"averaged": infos}
    save_model(args.out, model, vocab, dtype=torch.float16, extra=info, decoding=decoding)
    what = "weights" if len(folders) == 1 else f"the mean of {len(folders)} models' weights"
    print(f"wrote {args.out}: {what} in float16, decoding {json.dumps(decoding)}")


if __name__ == "__main__":
    main()
