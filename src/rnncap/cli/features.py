"""`rnncap features`: run an encoder once over a data set's images and cache its features.

The cache is keyed by encoder name and image content, and a rerun resumes where one stopped.
Without torch the encoder is a model folder's encoder.onnx in ONNX Runtime (`--model`).
"""

from __future__ import annotations

import argparse
import sys

from rnncap.cli._common import (
    UsageError,
    add_backend_argument,
    check_backend,
    encoder_for_backend,
    flag_error,
)
from rnncap.data.datasets import list_formats

NAME = "features"
HELP = "encode every image of a data set once and cache the features (float16, resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, help="data set folder (or JSON file for coco/karpathy)"
    )
    parser.add_argument(
        "--extra-data",
        default="",
        metavar="FORMAT:DIR[@WEIGHT],...",
        help="more data sets whose images go into the same cache (the sources of `rnncap train "
        "--extra-data`; weights are ignored here)",
    )
    parser.add_argument(
        "--format",
        default="flickr8k",
        choices=list_formats(),
        help="data set layout (default: flickr8k)",
    )
    parser.add_argument(
        "--split",
        default="all",
        choices=("all", "train", "dev", "val", "test"),
        help="which images to encode (default: all, every image with captions)",
    )
    parser.add_argument(
        "--encoder", help="encoder name (default: --model's, else efficientnet_lite0)"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="'default' (the bundled model) or a model folder: encode with its encoder, on the "
        "onnx backend its encoder.onnx; without torch that graph is the encoder (default: "
        "'default' there)",
    )
    parser.add_argument("--out", required=True, help="cache folder; features go in OUT/<encoder>/")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="images per forward pass (default: 64)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader processes opening images (default: the cores the encoder's threads "
        "leave free, at most 8); without torch, threads hashing the files (default: 0), the "
        "images read by one thread ahead of the encoder",
    )
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)"
    )
    add_backend_argument(parser)
    parser.add_argument(
        "--shard-size", type=int, default=1024, help="images per cache shard file (default: 1024)"
    )
    parser.add_argument(
        "--mirrored",
        action="store_true",
        help="encode each image mirrored left to right, into OUT/<encoder>-mirrored/ (for "
        "`rnncap train --mirror`)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from rnncap.data.datasets import load_dataset
    from rnncap.data.features import FeatureCache, build_cache, cache_name
    from rnncap.utils.config import ConfigError
    from rnncap.utils.device import resolve_device

    for flag in ("batch_size", "shard_size"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.workers is not None and args.workers < 0:
        raise UsageError("--workers must be 0 or more")
    device = resolve_device(args.device)
    check_backend(args.backend, device)  # --backend torch without torch: before reading data
    try:  # a bad --extra-data entry or --encoder name
        images = _images(args, load_dataset)
        encoder = _encoder(args, device)
    except ConfigError as error:
        raise flag_error(error) from None
    cache = FeatureCache(args.out, cache_name(encoder.name, args.mirrored))
    stats = build_cache(
        images,
        encoder,
        cache,
        device=device,
        batch_size=args.batch_size,
        workers=args.workers,
        shard_size=args.shard_size,
        progress=not args.quiet,
        mirrored=args.mirrored,
    )
    print(
        f"{cache.encoder_name}: {stats.images} images, {stats.cached_before} already cached, "
        f"{stats.computed} encoded in {stats.seconds:.1f} s "
        f"({stats.images_per_second:.1f} images/s), {len(stats.failed)} unreadable -> {cache.dir}"
    )
    if stats.failed:
        print(
            f"rnncap: {len(stats.failed)} images could not be read (see warnings)", file=sys.stderr
        )
        return 1
    return 0


def _images(args: argparse.Namespace, load_dataset) -> list:
    """The images of --data and of each --extra-data source (the same --split), in order."""
    from rnncap.engine.sources import parse_sources

    images = [s.image for s in load_dataset(args.data, args.format, args.split)]
    for source in parse_sources(args.extra_data):
        images += [s.image for s in load_dataset(source.path, source.format, args.split)]
    return images


def _encoder(args: argparse.Namespace, device):
    """The encoder to run: with torch, --encoder (or --model's) under --backend; without torch
    (--backend auto), the ONNX graph of --model (default: the bundled model) on NumPy arrays."""
    from rnncap.decode.runtime import torch_available
    from rnncap.models.files import read_captioner_config, resolve_model_dir

    if args.backend == "auto" and not torch_available():
        return _graph_encoder(args)
    from rnncap.models.encoders import DEFAULT_ENCODER, build_encoder

    folder = resolve_model_dir(args.model) if args.model is not None else None
    name = read_captioner_config(folder).encoder if folder is not None else DEFAULT_ENCODER
    if args.encoder is not None and folder is not None and args.encoder != name:
        raise UsageError(f"--encoder {args.encoder}: --model {args.model} encodes with {name}")
    encoder = build_encoder(args.encoder or name)
    return encoder_for_backend(encoder, args.backend, device, folder)


def _graph_encoder(args: argparse.Namespace):
    """--model's encoder.onnx in ONNX Runtime (no torch), checked against --encoder."""
    from rnncap.models.files import resolve_model_dir
    from rnncap.models.onnx_graph import ENCODER_FILE, GraphEncoder

    model = args.model or "default"
    folder = resolve_model_dir(model)
    if not (folder / ENCODER_FILE).is_file():
        raise UsageError(
            f"--model {model}: no {ENCODER_FILE}; without torch the encoder runs from a model "
            f"folder's {ENCODER_FILE} (rnncap export MODEL OUT, with torch installed)"
        )
    encoder = GraphEncoder.from_folder(folder)
    if args.encoder is not None and args.encoder != encoder.name:
        raise UsageError(
            f"--encoder {args.encoder}: without torch the encoder is --model {model}'s "
            f"{ENCODER_FILE} ({encoder.name})"
        )
    return encoder
