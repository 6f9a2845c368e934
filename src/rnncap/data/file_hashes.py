"""Hashes of a file's bytes, read in blocks: the feature cache's content key (SHA-1) and the
checksum recorded for each of its shards (CRC-32)."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path


def file_key(path: str | Path) -> str:
    """The cache key of an image: the SHA-1 of its file's bytes (hex)."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_crc32(path: str | Path) -> int:
    """CRC-32 of a file's bytes (zlib), read in blocks."""
    crc = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            crc = zlib.crc32(block, crc)
    return crc
