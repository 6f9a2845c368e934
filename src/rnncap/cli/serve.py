"""`rnncap serve`: a small web service (FastAPI + uvicorn) captioning uploaded photos.

POST /caption (multipart files; ?attention=1 adds per-word weights), GET /healthz, GET / (a page).
"""

from __future__ import annotations

import argparse
import re

from rnncap.cli._common import UsageError, add_backend_argument, check_backend, flag_error

NAME = "serve"
HELP = "serve captions over HTTP: POST /caption, GET /healthz, and a web page at /"
EXTRA = "serve"  # fastapi, uvicorn, python-multipart (rnncap.cli._extras)

_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def parse_size(text: str) -> int:
    """'10MB' -> 10485760; units B, KB, MB, GB (powers of 1024), case-insensitive."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", text.upper())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 10MB, 500KB, 1048576)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="default",
        help="'default' (the bundled model), a model folder, a run folder or a model.safetensors "
        "file (default: default)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, local only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument(
        "--max-batch", type=int, default=16, help="images per model call at most (default: 16)"
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=10.0,
        help="how long a request that finds the server idle waits for the requests still being "
        "read or decoded to join its batch; none: it starts at once (default: 10)",
    )
    _add_limit_arguments(parser)
    parser.add_argument(
        "--beam",
        type=int,
        default=None,
        help="beam size (default: the model's decoding setting, 3 unless set)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)"
    )
    parser.add_argument(
        "--search-threads",
        type=int,
        default=1,
        help="threads of the beam search (torch's, or BLAS's for the NumPy search of the "
        "torch-free runtime); the encoder keeps all the model's threads (OMP_NUM_THREADS, else "
        "torch's default: the physical cores); 0: all of them too (default: 1)",
    )
    parser.add_argument(
        "--encode",
        default="auto",
        choices=("auto", "request", "batch"),
        help="when images are encoded: each request as soon as it is decoded, the beam searches "
        "batched (request), or each batch whole (batch); auto: request with the ONNX Runtime "
        "encoder, batch with torch's (default: auto)",
    )
    add_backend_argument(parser)


def _add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that bound what clients may cost: sizes, timeouts, connections."""
    parser.add_argument(
        "--max-bytes",
        type=parse_size,
        default="10MB",
        help="request size limit, answered 413 beyond (default: 10MB)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds for a whole request (upload, decoding, captions), 504 beyond (default: 30)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=10.0,
        help="seconds a client may pause while sending its upload, 408 beyond (default: 10)",
    )
    parser.add_argument(
        "--max-upload-memory",
        type=parse_size,
        default="64MB",
        help="bytes of the uploads being received held in memory by all requests together (past "
        "the first 64 KB of each); more goes to temporary files (default: 64MB)",
    )
    parser.add_argument(
        "--max-upload-disk",
        type=parse_size,
        default="1GB",
        help="bytes of the uploads being received held in temporary files; more is refused with "
        "503 until some finish (default: 1GB)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help="open connections at most; past it the oldest one with no request in progress is "
        "closed (default: what the open-file limit allows, at most 1000)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=5.0,
        help="seconds a connection may stay open without sending a request (default: 5)",
    )


_FLAGS = {"beam_size": "--beam", "encode_per_request": "--encode"}  # ServeConfig's other names


def run(args: argparse.Namespace) -> int:
    from rnncap.decode.captioner import load
    from rnncap.serving.app import create_app
    from rnncap.serving.connections import run_server
    from rnncap.utils.device import resolve_device

    config = _serve_config(args)
    device = resolve_device(args.device)
    check_backend(args.backend, device)
    captioner = load(args.model, device, backend=args.backend)
    app = create_app(captioner, config)
    print(f"rnncap: serving {args.model} on http://{args.host}:{args.port}/", flush=True)
    run_server(app, args.host, args.port, args.max_connections, args.header_timeout)
    return 0


def _serve_config(args: argparse.Namespace):
    """The flags checked and gathered into a ServeConfig; a bad value is a UsageError."""
    from rnncap.serving.app import ServeConfig
    from rnncap.utils.config import ConfigError

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: must be between 0 and 65535")
    if args.header_timeout <= 0:
        raise UsageError("--header-timeout must be positive")
    for flag in ("max_upload_memory", "max_upload_disk", "max_connections"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be positive")
    if args.search_threads < 0:
        raise UsageError("--search-threads must be 0 (all the model's threads) or more")
    try:
        return ServeConfig(
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            max_bytes=args.max_bytes,
            max_upload_memory=args.max_upload_memory,
            max_upload_disk=args.max_upload_disk,
            timeout=args.timeout,
            body_timeout=args.body_timeout,
            beam_size=args.beam,
            search_threads=args.search_threads or None,
            encode_per_request={"auto": None, "request": True, "batch": False}[args.encode],
        )
    except ConfigError as error:
        raise flag_error(error, _FLAGS) from None
