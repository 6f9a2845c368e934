"""Beam search over a batch of images at once vs the same search run image by image.

Prints seconds for both and the speed-up, on a randomly initialised model of the default size
(the timing does not depend on the weights' values, only on shapes and the number of steps, so
both runs are forced to decode the full max_length).
"""

from __future__ import annotations

import argparse

import torch

from _timing import timed
from rnncap.decode.beam import beam_search
from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--cell-type", default="attn", choices=["rnn", "lstm", "attn"])
    p.add_argument("--vocab", type=int, default=2500)
    p.add_argument("--max-length", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = CaptionerConfig(cell_type=args.cell_type, vocab_size=args.vocab, end_id=args.vocab - 1)
    model = CaptioningRNN(cfg).to(args.device).eval()
    with torch.no_grad():  # <end> never wins: every run does max_length steps
        model.vocab_proj.bias[cfg.end_id] = -1e4
    shape = (args.images, 1280, 7, 7) if args.cell_type == "attn" else (args.images, 1280)
    features = torch.randn(shape, device=args.device)

    def run_batched() -> None:
        beam_search(model, features, beam_size=args.beam, max_length=args.max_length)

    def run_one_by_one() -> None:
        for i in range(args.images):
            beam_search(model, features[i : i + 1], beam_size=args.beam, max_length=args.max_length)

    rows = []
    for name, fn in (("batched", run_batched), ("one image at a time", run_one_by_one)):
        fn()  # warm-up
        rows.append((name, timed(fn, args.device)))
    print(
        f"beam search, {args.images} images, beam {args.beam}, {args.cell_type}, V={args.vocab}, "
        f"{args.max_length} steps, {args.device}, {torch.get_num_threads()} threads"
    )
    print(f"{'mode':<22}{'seconds':>10}{'images/s':>12}")
    for name, sec in rows:
        print(f"{name:<22}{sec:>10.3f}{args.images / sec:>12.1f}")
    print(f"speed-up of batching: {rows[1][1] / rows[0][1]:.1f}x")


if __name__ == "__main__":
    main()
