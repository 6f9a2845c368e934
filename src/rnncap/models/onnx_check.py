"""Checks on an exported encoder file before and while it runs: its SHA-256 against the digest
recorded when it was exported, its metadata and output shapes against the torch encoder.

A graph is code: a damaged or replaced `encoder.onnx` would otherwise give wrong captions
silently. The user cache keeps each file's digest beside it (NAME.onnx.sha256); a model folder
keeps it in config.json (`encoder_onnx.sha256`, written by `rnncap export`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from rnncap.utils.io import InvalidFileError, atomic_write_text

DIGEST_SUFFIX = ".sha256"  # the user cache's record of a file's digest, beside it
RECORD = "encoder_onnx"  # config.json's entry for the model folder's encoder.onnx
MAX_RECORD_BYTES = 100  # a digest file holds 64 hex digits and a newline


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def digest_file(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def record_digest(path: str | Path) -> str:
    """Write the digest of a freshly exported cache file beside it; returns the digest."""
    digest = file_digest(path)
    atomic_write_text(digest_file(path), digest + "\n")
    return digest


def cache_file_intact(path: str | Path) -> bool:
    """True when a cache file and the digest recorded beside it at export agree."""
    path, record = Path(path), digest_file(path)
    try:
        if not (path.is_file() and record.is_file()) or record.stat().st_size > MAX_RECORD_BYTES:
            return False
        return record.read_text(encoding="ascii").strip() == file_digest(path)
    except (OSError, UnicodeDecodeError):
        return False


def check_folder_file(path: Path, recorded: object) -> None:
    """A model folder's encoder.onnx against the digest config.json records for it
    (`recorded`: the config's `encoder_onnx` entry); InvalidFileError when they differ."""
    expected = recorded.get("sha256") if isinstance(recorded, dict) else None
    if not isinstance(expected, str):
        raise InvalidFileError(
            path, f"config.json records no SHA-256 for it ({RECORD}.sha256); run rnncap export"
        )
    try:
        found = file_digest(path)
    except OSError as error:
        raise InvalidFileError(path, f"cannot read it ({error.strerror or error})") from None
    if found != expected.lower():
        raise InvalidFileError(
            path,
            "its SHA-256 differs from the one config.json records: the file changed after "
            "rnncap export (export it again)",
        )


def check_matches(onnx_encoder, encoder) -> None:
    """The graph's metadata and declared output against the torch encoder it stands in for."""
    for attribute in ("name", "out_channels", "spatial", "image_size"):
        theirs, ours = getattr(onnx_encoder, attribute), getattr(encoder, attribute)
        if theirs != ours:
            raise InvalidFileError(
                onnx_encoder.path, f"its {attribute} is {theirs!r}, the model's encoder {ours!r}"
            )
    shape = onnx_encoder.declared_output_shape()
    rank = 4 if encoder.spatial else 2
    if len(shape) != rank or (isinstance(shape[1], int) and shape[1] != encoder.out_channels):
        raise InvalidFileError(
            onnx_encoder.path,
            f"its output has shape {list(shape)}, the model needs (N, {encoder.out_channels}"
            + (", h, w)" if encoder.spatial else ")"),
        )


def check_output(path: Path, features, batch: int, channels: int, spatial: bool) -> None:
    """The features a graph returned for `batch` images: (N, C, h, w) or (N, C)."""
    shape = tuple(features.shape)
    rank = 4 if spatial else 2
    if len(shape) != rank or shape[:2] != (batch, channels) or 0 in shape:
        expected = f"({batch}, {channels}" + (", h, w)" if spatial else ")")
        raise InvalidFileError(path, f"it returned features of shape {list(shape)}, not {expected}")
