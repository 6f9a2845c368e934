"""Images/s of the whole `rnncap caption` pipeline against the encoder's bare forward pass.

The pipeline (DataLoader workers decoding and preprocessing JPEGs, batched encoder, batched beam
search) runs over N images; the reference is the encoder alone on the same images, already
decoded and preprocessed in memory, in the same run and batch size. Target: ratio >= 0.8.

Usage: python benchmarks/caption_throughput.py [--limit 1000] [--model default] [--device cpu]
Without the bundled model (or with --untrained) an untrained model of the default size is used:
decoding cost does not depend on the weights, only on the caption lengths (untrained: the most).
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import torch

from _timing import timed
from rnncap.decode.beam import DecodeOptions
from rnncap.decode.captioner import Captioner

REPO = Path(__file__).resolve().parents[1]
FLICKR8K = REPO.parent / "shared" / "data" / "flickr8k"


def load_captioner(spec: str, untrained: bool, samples, device: torch.device):
    from rnncap.data.vocab import Vocabulary
    from rnncap.models.captioner import CaptionerConfig, CaptioningRNN
    from rnncap.models.folder import load_model

    if not untrained:
        try:
            model, vocab = load_model(spec, device)
            return model, vocab, spec
        except FileNotFoundError as error:
            print(f"note: {error}; using an untrained model of the default size")
    vocab = Vocabulary.build((c for s in samples for c in s.captions), min_count=5)
    torch.manual_seed(0)
    model = CaptioningRNN(CaptionerConfig(vocab_size=len(vocab)))
    return model.to(device).eval(), vocab, "untrained (default size)"


def encode_all(encoder, images: torch.Tensor, batch_size: int, device: torch.device) -> None:
    for i in range(0, len(images), batch_size):
        encoder(images[i : i + batch_size].to(device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(FLICKR8K), help="Flickr8k folder")
    parser.add_argument("--split", default="test", help="split to caption (default: test)")
    parser.add_argument("--limit", type=int, default=1000, help="images at most (default: 1000)")
    parser.add_argument("--model", default="default", help="model spec (default: default)")
    parser.add_argument("--untrained", action="store_true", help="untrained default-size model")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--beam", type=int, default=3, help="beam size")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from rnncap.data.datasets import load_dataset
    from rnncap.data.images import open_image

    samples = load_dataset(args.data, "flickr8k", "all", report=None).samples
    split = load_dataset(args.data, "flickr8k", args.split, report=None).samples
    paths = [s.image for s in split][: args.limit]
    model, vocab, name = load_captioner(args.model, args.untrained, samples, device)
    encoder = model.encoder

    # Reference: the encoder alone on images decoded and preprocessed beforehand.
    images = torch.stack([encoder.preprocess(open_image(p)) for p in paths])  # (N, 3, S, S)
    with torch.inference_mode():
        encoder(images[: args.batch_size].to(device))  # warm-up
        encoder_s = timed(partial(encode_all, encoder, images, args.batch_size, device), device)
    del images

    captioner = Captioner(model, vocab, DecodeOptions(beam_size=args.beam))

    def pipeline(files, device_decode: bool) -> list:
        return list(
            captioner.caption_files(files, progress=False, batch_size=args.batch_size,
                                    workers=args.workers, device_decode=device_decode)
        )  # fmt: skip

    # On CUDA the JPEGs are decoded on the GPU (nvJPEG); the PIL workers' pipeline is timed too.
    modes = [("caption pipeline (files -> captions)", True)]
    if device.type == "cuda":
        modes = [("caption pipeline, JPEGs decoded on the GPU", True),
                 ("caption pipeline, PIL in DataLoader workers", False)]  # fmt: skip
    rows, results = [], []
    for label, device_decode in modes:
        if device.type == "cuda":
            pipeline(paths[: args.batch_size], device_decode)  # warm-up: decoder, cuDNN

        def run(device_decode=device_decode) -> None:
            results[:] = pipeline(paths, device_decode)

        rows.append((label, timed(run, device)))
    words = sum(len(r.words) for r in results if hasattr(r, "words")) / max(len(results), 1)

    n = len(paths)
    print(
        f"model: {name}; {n} images ({args.split}), batch {args.batch_size}, "
        f"{args.workers} workers, beam {args.beam}, device {device}, "
        f"{torch.get_num_threads()} threads, mean caption {words:.1f} words"
    )
    print(f"{'measure':<44}{'seconds':>10}{'images/s':>12}")
    print(
        f"{'encoder forward only (preloaded tensors)':<44}{encoder_s:>10.2f}{n / encoder_s:>12.1f}"
    )
    for label, pipeline_s in rows:
        print(f"{label:<44}{pipeline_s:>10.2f}{n / pipeline_s:>12.1f}")
    for label, pipeline_s in rows:
        print(f"ratio {label} / encoder: {encoder_s / pipeline_s:.2f} (target >= 0.80)")


if __name__ == "__main__":
    main()
