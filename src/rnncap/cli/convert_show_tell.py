"""`rnncap convert-show-tell`: the classic Show-and-Tell checkpoint files -> a model folder.

Done once; the folder is then a model like any other for every command, `rnncap.load` and the
web service (greedy decoding by default, as the original).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rnncap.cli._common import UsageError

NAME = "convert-show-tell"
HELP = "turn the classic Show-and-Tell checkpoint (encoder, decoder, vocab.pkl) into a model folder"
EXTRA = "train"  # torch (rnncap.cli._extras)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("encoder", metavar="ENC", help="the encoder weights (encoder-5-3000.pkl)")
    parser.add_argument("decoder", metavar="DEC", help="the decoder weights (decoder-5-3000.pkl)")
    parser.add_argument("vocab", metavar="VOCAB", help="the pickled vocabulary (vocab.pkl)")
    parser.add_argument("out", metavar="OUT", help="model folder to write (new or empty)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"OUT {out}: exists and is not an empty folder")
    from rnncap.models.showtell import load_show_tell
    from rnncap.models.showtell_folder import save_show_tell

    model = load_show_tell(args.encoder, args.decoder, args.vocab)  # ShowTellError names the file
    sources = [Path(p).name for p in (args.encoder, args.decoder, args.vocab)]
    save_show_tell(out, model, info={"converted_from": sources})
    print(f"{out}: Show-and-Tell model, {len(model.vocab)} words (from {', '.join(sources)})")
    return 0
