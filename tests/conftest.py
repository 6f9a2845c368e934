"""Shared fixtures: the Flickr8k location (skips when absent), a tiny model folder and its loaded
captioner with reference captions, a CUDA skip marker, and a test cache folder for encoders
exported to ONNX."""

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


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny model folder (`support.inference.make_tiny_model`), a fresh one per test module."""
    from support.inference import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def tiny_loaded(tmp_path_factory):
    """A `Captioner` of a tiny model folder with the pretrained encoder, per test module."""
    from support.inference import tiny_captioner

    return tiny_captioner(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def tiny_reference(tiny_loaded) -> dict:
    """The sample photos captioned one by one the plain way: name -> (caption, score, attention)."""
    from support.inference import reference_by_name

    return reference_by_name(tiny_loaded)


@pytest.fixture(scope="session", autouse=True)
def encoder_export_cache(request, tmp_path_factory):
    """Encoders exported to ONNX on first use go to pytest's cache folder, not the user's
    (kept between runs: an export is keyed by the encoder's weights and written atomically)."""
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    folder = cache.mkdir("rnncap-xdg-cache") if cache else tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield


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
