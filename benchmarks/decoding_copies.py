"""Decoding with the decoder's copies of its weights vs with the parameters, in the same run.

While decoding, `CaptioningRNN.step` looks up each word's input term of the gates in a (V, 4H)
table and multiplies by a contiguous copy of the transposed vocabulary weight (D, V); the
reference turns both off (`MAX_DECODING_COPY_BYTES = 0`), so that every step multiplies the word
vectors by Wx and the output by nn.Linear's (V, D) weight. Both decode the same features with the
model's own decoding settings (beam, guidance, ...), taking turns; each row shows the median of
the repeats, and the captions of the two are compared.

Usage: python benchmarks/decoding_copies.py [--model default] [--images 128] [--batch 16]
       [--threads 1] [--repeats 5]
Features: the sample photos through the model's encoder, repeated up to --images.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

import rnncap
import rnncap.models.captioning_rnn as captioner_module
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
        images = torch.stack(
            [captioner.preprocess(rnncap.decode.captioner.open_image(p)) for p in photos]
        )
        grids = captioner.model.encode(images)
    features = grids.repeat((args.images + len(photos) - 1) // len(photos), 1, 1, 1)[: args.images]
    limit = captioner_module.MAX_DECODING_COPY_BYTES

    def run(copies: bool) -> list[str]:
        captioner_module.MAX_DECODING_COPY_BYTES = limit if copies else 0
        with torch.inference_mode():
            batches = [
                captioner.caption_features(features[i : i + args.batch])
                for i in range(0, args.images, args.batch)
            ]
        return [c.text for batch in batches for c in batch]

    texts = {mode: run(mode) for mode in (False, True)}  # warm-up (and the copies are made)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for mode in (False, True):
            seconds[mode].append(timed(lambda mode=mode: run(mode)))
    captioner_module.MAX_DECODING_COPY_BYTES = limit
    same = sum(a == b for a, b in zip(texts[False], texts[True], strict=True))
    options = captioner.decode_options()
    print(
        f"{args.images} images in batches of {args.batch}, {args.threads} thread(s), "
        f"median of {args.repeats}, beam {options.beam_size}, guidance {options.guidance}"
    )
    print(f"{'decoding':<34}{'seconds':>9}{'ms/image':>10}")
    rows = ((False, "with the parameters"), (True, "with the copies (table, W^T)"))
    for mode, name in rows:
        sec = statistics.median(seconds[mode])
        print(f"{name:<34}{sec:>9.3f}{1000 * sec / args.images:>10.2f}")
    ratio = statistics.median(seconds[False]) / statistics.median(seconds[True])
    print(f"speed-up of the copies: {ratio:.2f}x; identical captions: {same} of {args.images}")


if __name__ == "__main__":
    main()
