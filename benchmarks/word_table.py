"""Decoding with the per-word input table vs the per-step product x Wx + b, in the same run.

While decoding, `CaptioningRNN.step` looks up each word's input term of the gates in a (V, 4H)
table; the reference turns the table off (`MAX_WORD_TABLE_BYTES = 0`) so that every step
multiplies the word vectors again. Both decode the same features with the model's own decoding
settings (beam, guidance, ...), taking turns; each row shows the median of the repeats, and the
captions of the two are compared.

Usage: python benchmarks/word_table.py [--model default] [--images 128] [--batch 16]
       [--threads 1] [--repeats 5]
Features: the sample photos through the model's encoder, repeated up to --images.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

import rnncap
import rnncap.models.captioner as captioner_module
from _timing import timed

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    captioner = rnncap.load(args.model, device="cpu", backend="torch")
    photos = sorted((REPO / "examples").glob("*.jpg"))
    with torch.inference_mode():
        images = torch.stack([captioner.preprocess(rnncap.decode.captioner.open_image(p))
                              for p in photos])  # fmt: skip
        grids = captioner.model.encode(images)
    features = grids.repeat((args.images + len(photos) - 1) // len(photos), 1, 1, 1)[: args.images]
    limit = captioner_module.MAX_WORD_TABLE_BYTES

    def run(table: bool) -> list[str]:
        captioner_module.MAX_WORD_TABLE_BYTES = limit if table else 0
        with torch.inference_mode():
            batches = [captioner.caption_features(features[i : i + args.batch])
                       for i in range(0, args.images, args.batch)]  # fmt: skip
        return [c.text for batch in batches for c in batch]

    texts = {mode: run(mode) for mode in (False, True)}  # warm-up (and the table is built)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for mode in (False, True):
            seconds[mode].append(timed(lambda mode=mode: run(mode)))
    captioner_module.MAX_WORD_TABLE_BYTES = limit
    same = sum(a == b for a, b in zip(texts[False], texts[True], strict=True))
    options = captioner.decode_options()
    print(
        f"{args.images} images in batches of {args.batch}, {args.threads} thread(s), "
        f"median of {args.repeats}, beam {options.beam_size}, guidance {options.guidance}"
    )
    print(f"{'input term':<26}{'seconds':>9}{'ms/image':>10}")
    for mode, name in ((False, "x Wx + b every step"), (True, "looked up per word")):
        sec = statistics.median(seconds[mode])
        print(f"{name:<26}{sec:>9.3f}{1000 * sec / args.images:>10.2f}")
    ratio = statistics.median(seconds[False]) / statistics.median(seconds[True])
    print(f"speed-up of the table: {ratio:.2f}x; identical captions: {same} of {args.images}")


if __name__ == "__main__":
    main()
