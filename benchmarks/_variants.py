"""What the throughput benchmarks (caption_throughput.py, features.py) measure: the encoder
backends, intra-op thread counts and, on CUDA, the JPEG decoders, with the flags that pick them."""

from __future__ import annotations

import argparse

import torch


def add_variant_options(parser: argparse.ArgumentParser) -> None:
    """--threads N [N ...] and --backends {torch,onnx} [...]."""
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="torch (and ONNX Runtime) intra-op thread counts, e.g. 1 2 (default: torch's)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["torch"],
        choices=("torch", "onnx"),
        help="encoder backends (default: torch); torch is always measured, as the reference; "
        "onnx is CPU only",
    )


def variants(args: argparse.Namespace, device: torch.device):
    """-> (thread counts, backends with torch first, [(decoder label, device_decode)]).

    On CUDA the JPEGs are decoded on the GPU (nvJPEG) and, timed too, by PIL in the DataLoader
    workers; on the CPU PIL decodes them either way. ONNX Runtime runs on the CPU only.
    """
    threads = args.threads or [torch.get_num_threads()]
    backends = ["torch"] + [b for b in args.backends if b != "torch" and device.type == "cpu"]
    decoders = [("GPU", True), ("PIL", False)] if device.type == "cuda" else [("PIL", True)]
    return threads, backends, decoders
