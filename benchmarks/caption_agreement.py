"""How often the ONNX Runtime encoder changes a caption: the Flickr8k test images captioned from
torch eager features and from ONNX Runtime features, same model, same beam search.

Prints the share of identical captions (target >= 99%), the largest feature difference, the
largest score difference, and the images whose captions differ.

Usage: python benchmarks/caption_agreement.py [--limit 1000] [--beam 3] [--model default]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from _data import add_data_argument, missing, test_images
from rnncap.data.images import open_image
from rnncap.decode.captioner import load


def encode(encoder, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([encoder(batch) for batch in images.split(batch_size)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(parser)
    parser.add_argument("--limit", type=int, default=1000, help="test images at most")
    parser.add_argument("--beam", type=int, default=3, help="beam size")
    parser.add_argument("--model", default="default", help="model spec (default: default)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per call")
    args = parser.parse_args()
    data = Path(args.data)
    if missing(data):
        return 0
    paths = test_images(data, args.limit)
    names = [p.name for p in paths]
    captioner = load(args.model, device="cpu", backend="torch")
    torch_encoder = captioner.model.encoder
    images = torch.stack([torch_encoder.preprocess(open_image(p)) for p in paths])
    torch_features = encode(torch_encoder, images, args.batch_size)
    captioner.model.set_encoder(None)
    onnx_captioner = load(args.model, device="cpu", backend="onnx")
    onnx_features = encode(onnx_captioner.model.encoder, images, args.batch_size)
    del images

    options = captioner.decode_options(beam=args.beam)  # the model's own settings otherwise
    by_torch = captioner.caption_feature_batches(torch_features, options, args.batch_size)
    by_onnx = onnx_captioner.caption_feature_batches(onnx_features, options, args.batch_size)
    differ = [
        (name, a.text, b.text)
        for name, a, b in zip(names, by_torch, by_onnx, strict=True)
        if a.text != b.text
    ]
    same = len(names) - len(differ)
    feature_diff = (torch_features - onnx_features).abs().max().item()
    score_diff = max(abs(a.score - b.score) for a, b in zip(by_torch, by_onnx, strict=True))
    print(
        f"model {args.model}, {len(names)} Flickr8k test images, beam {args.beam}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"identical captions torch vs onnx: {same}/{len(names)} = {same / len(names):.1%}")
    print(
        f"largest feature difference: {feature_diff:.1e}; largest score difference: "
        f"{score_diff:.1e}"
    )
    for name, a, b in differ:
        print(f"  {name}: torch {a!r} | onnx {b!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
