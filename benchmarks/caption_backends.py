"""Images/s of the whole `rnncap caption` pipeline, torch eager vs ONNX Runtime encoder.

The pipeline (DataLoader workers decoding and preprocessing JPEGs, batched encoder, batched beam
search) runs over N images for each encoder backend and thread count; torch eager is the
reference ("pipeline x torch"), and each backend's encoder alone on the same images, decoded and
preprocessed in memory beforehand, shows what the rest of the pipeline costs (pipeline/encoder).

Usage: python benchmarks/caption_backends.py [--limit 1000] [--threads 1 2] [--backends ...]
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
from rnncap.models.onnx_encoder import use_backend

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


def caption_into(results: list, model, vocab, paths, args) -> None:
    captioner = Captioner(model, vocab, DecodeOptions(beam_size=args.beam))
    results.extend(
        captioner.caption_files(
            paths, progress=False, batch_size=args.batch_size, workers=args.workers
        )
    )


def set_backend(model, torch_encoder, backend: str, threads: int) -> None:
    """Give the model the torch encoder, or its ONNX twin running on `threads` threads."""
    model.set_encoder(torch_encoder)
    if backend == "onnx":
        use_backend(model, "onnx", threads=threads)


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
    parser.add_argument(
        "--threads", type=int, nargs="+", default=None, help="intra-op thread counts (e.g. 1 2)"
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["torch", "onnx"],
        choices=("torch", "onnx"),
        help="encoder backends, torch eager first as the reference (default: torch onnx)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    backends = [b for b in args.backends if b == "torch" or device.type == "cpu"]

    from rnncap.data.datasets import load_dataset
    from rnncap.data.images import open_image

    samples = load_dataset(args.data, "flickr8k", "all", report=None).samples
    split = load_dataset(args.data, "flickr8k", args.split, report=None).samples
    paths = [s.image for s in split][: args.limit]
    model, vocab, name = load_captioner(args.model, args.untrained, samples, device)
    torch_encoder = model.encoder
    images = torch.stack([torch_encoder.preprocess(open_image(p)) for p in paths])  # (N, 3, S, S)

    rows, captions = [], {}
    for threads in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        for backend in backends:
            set_backend(model, torch_encoder, backend, threads)
            encoder = model.encoder
            # Reference: the encoder alone on images decoded and preprocessed beforehand.
            with torch.inference_mode():
                encoder(images[: args.batch_size].to(device))  # warm-up
                encoder_s = timed(
                    partial(encode_all, encoder, images, args.batch_size, device), device
                )
            results = []
            pipeline_s = timed(partial(caption_into, results, model, vocab, paths, args), device)
            captions[threads, backend] = [getattr(r, "text", None) for r in results]
            rows.append((threads, backend, encoder_s, pipeline_s))
    words = [len(c.split()) for c in captions[rows[0][:2]] if c is not None]

    n = len(paths)
    print(
        f"model: {name}; {n} images ({args.split}), batch {args.batch_size}, "
        f"{args.workers} workers, beam {args.beam}, device {device}, "
        f"mean caption {sum(words) / max(len(words), 1):.1f} words"
    )
    print(
        f"{'threads':>7} {'backend':<8}{'encoder img/s':>15}{'pipeline img/s':>16}"
        f"{'pipeline/encoder':>18}{'pipeline x torch':>18}"
    )
    reference = {threads: pipeline_s for threads, b, _, pipeline_s in rows if b == "torch"}
    for threads, backend, encoder_s, pipeline_s in rows:
        speedup = reference[threads] / pipeline_s if threads in reference else float("nan")
        print(
            f"{threads:>7} {backend:<8}{n / encoder_s:>15.1f}{n / pipeline_s:>16.1f}"
            f"{encoder_s / pipeline_s:>18.2f}{speedup:>18.2f}"
        )
    for threads in args.threads or [torch.get_num_threads()]:
        if (threads, "torch") in captions and (threads, "onnx") in captions:
            pairs = zip(captions[threads, "torch"], captions[threads, "onnx"], strict=True)
            same = sum(a == b for a, b in pairs)
            print(f"{threads} threads: identical captions torch vs onnx {same}/{n}")


if __name__ == "__main__":
    main()
