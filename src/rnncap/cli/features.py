"""`rnncap features`: run an encoder once over a data set's images and cache its features.

The cache is keyed by encoder name and image content, and a rerun resumes where one stopped.
"""

from __future__ import annotations

import argparse
import sys

from rnncap.cli._common import UsageError, add_backend_argument, encoder_for_backend, flag_error
from rnncap.data.datasets import list_formats

NAME = "features"
HELP = "encode every image of a data set once and cache the features (float16, resumable)"
EXTRA = "train"  # torch and the pretrained encoders (rnncap.cli._extras)


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
        "--encoder", default="efficientnet_lite0", help="encoder name (default: efficientnet_lite0)"
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
        "leave free, at most 8)",
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
    from rnncap.models.encoders import build_encoder
    from rnncap.utils.config import ConfigError
    from rnncap.utils.device import resolve_device

    for flag in ("batch_size", "shard_size"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.workers is not None and args.workers < 0:
        raise UsageError("--workers must be 0 or more")
    device = resolve_device(args.device)
    try:  # a bad --extra-data entry or --encoder name
        images = _images(args, load_dataset)
        encoder = build_encoder(args.encoder)
    except ConfigError as error:
        raise flag_error(error) from None
    encoder = encoder_for_backend(encoder, args.backend, device)
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
