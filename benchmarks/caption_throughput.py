"""Images/s of the whole `rnncap caption` pipeline against the encoder's bare forward pass, per
encoder backend (torch eager, ONNX Runtime), thread count and, on CUDA, JPEG decoder.

The pipeline (DataLoader workers decoding and preprocessing JPEGs, batched encoder, batched beam
search) runs over N images. Each row's reference is the same encoder alone on the same images,
decoded and preprocessed in memory beforehand, in the same run and batch size (pipeline/encoder,
target >= 0.8). With `--backends torch onnx`, torch eager at the same thread count and decoder is
the reference for the other backends ("pipeline x torch") and their captions are compared. On
CUDA the JPEGs are decoded on the GPU (nvJPEG) and, timed too, by PIL in the DataLoader workers;
ONNX Runtime runs on the CPU only, so on CUDA only torch is measured.

Usage: python benchmarks/caption_throughput.py [--limit 1000] [--model default] [--device cpu]
           [--threads 1 2] [--backends torch onnx]
Without the bundled model (or with --untrained) an untrained model of the default size is used:
decoding cost does not depend on the weights, only on the caption lengths (untrained: the most).
"""

from __future__ import annotations

import argparse
from functools import partial

import torch

from _data import add_data_argument
from _timing import timed
from _variants import add_variant_options, variants
from rnncap.decode.beam import DecodeOptions
from rnncap.decode.captioner import Captioner
from rnncap.models.onnx_encoder import use_backend


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(parser)
    parser.add_argument("--split", default="test", help="split to caption (default: test)")
    parser.add_argument("--limit", type=int, default=1000, help="images at most (default: 1000)")
    parser.add_argument("--model", default="default", help="model spec (default: default)")
    parser.add_argument("--untrained", action="store_true", help="untrained default-size model")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch")
    parser.add_argument(
        "--workers", type=int, default=None, help="DataLoader workers (default: as rnncap caption)"
    )
    parser.add_argument("--beam", type=int, default=3, help="beam size")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    add_variant_options(parser)
    return parser.parse_args()


def load_captioner(spec: str, untrained: bool, samples, device: torch.device):
    from rnncap.data.vocab import Vocabulary
    from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN
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


def set_backend(model, torch_encoder, backend: str, threads: int) -> None:
    """Give the model the torch encoder, or its ONNX twin running on `threads` threads."""
    model.set_encoder(torch_encoder)
    if backend == "onnx":
        use_backend(model, "onnx", threads=threads)


def caption_into(results: list, captioner, paths, args, device_decode: bool) -> None:
    results[:] = captioner.caption_files(
        paths,
        progress=False,
        batch_size=args.batch_size,
        workers=args.workers,
        device_decode=device_decode,
    )


def measure(model, vocab, paths, images, args, device: torch.device):
    """-> rows (threads, backend, decoder, encoder s, pipeline s), {(threads, backend): texts}."""
    thread_counts, backends, decoders = variants(args, device)
    torch_encoder = model.encoder
    rows, captions = [], {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for backend in backends:
            set_backend(model, torch_encoder, backend, threads)
            captioner = Captioner(model, vocab, DecodeOptions(beam_size=args.beam))
            encoder = model.encoder
            # Reference: the encoder alone on images decoded and preprocessed beforehand.
            with torch.inference_mode():
                encoder(images[: args.batch_size].to(device))  # warm-up
                encoder_s = timed(
                    partial(encode_all, encoder, images, args.batch_size, device), device
                )
            for decoder, device_decode in decoders:
                results = []  # warm-up: the ONNX session, nvJPEG, cuDNN
                caption_into(results, captioner, paths[: args.batch_size], args, device_decode)
                run = partial(caption_into, results, captioner, paths, args, device_decode)
                rows.append((threads, backend, decoder, encoder_s, timed(run, device)))
                captions.setdefault((threads, backend), [getattr(r, "text", None) for r in results])
    model.set_encoder(torch_encoder)
    return rows, captions


def report(rows, captions, n: int, header: str) -> None:
    texts = [c for c in next(iter(captions.values())) if c is not None]
    words = sum(len(c.split()) for c in texts) / max(len(texts), 1)
    print(f"{header}, mean caption {words:.1f} words")
    print(
        f"{'threads':>7} {'backend':<8}{'decoder':<8}{'encoder img/s':>14}{'pipeline s':>12}"
        f"{'pipeline img/s':>16}{'pipeline/encoder':>18}{'pipeline x torch':>18}"
    )
    reference = {(t, d): pipeline_s for t, b, d, _, pipeline_s in rows if b == "torch"}
    for threads, backend, decoder, encoder_s, pipeline_s in rows:
        speedup = reference[threads, decoder] / pipeline_s
        print(
            f"{threads:>7} {backend:<8}{decoder:<8}{n / encoder_s:>14.1f}{pipeline_s:>12.2f}"
            f"{n / pipeline_s:>16.1f}{encoder_s / pipeline_s:>18.2f}{speedup:>18.2f}"
        )
    print("encoder: forward only on preloaded tensors; pipeline: files -> captions")
    print("target pipeline/encoder >= 0.80")
    for threads in dict.fromkeys(t for t, *_ in rows):
        if (threads, "onnx") in captions:
            pairs = zip(captions[threads, "torch"], captions[threads, "onnx"], strict=True)
            same = sum(a == b for a, b in pairs)
            print(f"{threads} threads: identical captions torch vs onnx {same}/{n}")


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)

    from rnncap.data.datasets import load_dataset
    from rnncap.data.images import open_image

    samples = load_dataset(args.data, "flickr8k", "all", report=None).samples
    split = load_dataset(args.data, "flickr8k", args.split, report=None).samples
    paths = [s.image for s in split][: args.limit]
    model, vocab, name = load_captioner(args.model, args.untrained, samples, device)
    preprocess = model.encoder.preprocess
    images = torch.stack([preprocess(open_image(p)) for p in paths])  # (N, 3, S, S)
    rows, captions = measure(model, vocab, paths, images, args, device)
    header = (
        f"model: {name}; {len(paths)} images ({args.split}), batch {args.batch_size}, "
        f"{'auto' if args.workers is None else args.workers} workers, beam {args.beam}, "
        f"device {device}"
    )
    report(rows, captions, len(paths), header)


if __name__ == "__main__":
    main()
