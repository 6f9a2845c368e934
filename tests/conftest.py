"""Shared fixtures: the Flickr8k location (skips when absent) and a CUDA skip marker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLICKR8K = Path(os.environ.get("RNNCAP_FLICKR8K", REPO.parent / "shared" / "data" / "flickr8k"))


@pytest.fixture(scope="session")
def flickr8k_dir() -> Path:
    if not (FLICKR8K / "captions.txt").is_file():
        pytest.skip(f"Flickr8k not found at {FLICKR8K} (set RNNCAP_FLICKR8K)")
    return FLICKR8K


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
