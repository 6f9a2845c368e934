"""A feature-cache build with an encoder of NumPy arrays (`GraphEncoder`, no torch) against the
build of the same ONNX graph on the torch path (`OnnxEncoder`): the same cache, bit for bit, and
features within float16 rounding of the torch encoder the graph was exported from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")

from rnncap.data.features import FeatureCache, build_cache, cache_name, file_key  # noqa: E402
from rnncap.data.images import open_image  # noqa: E402
from rnncap.models.onnx_encoder import OnnxEncoder, export_encoder  # noqa: E402
from rnncap.models.onnx_graph import GraphEncoder  # noqa: E402
from support.inference import example_copies, tiny_encoder  # noqa: E402
from support.tinydata import cache_contents  # noqa: E402


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    return export_encoder(tiny_encoder(), tmp_path_factory.mktemp("onnx") / "encoder.onnx")


@pytest.fixture
def files(tmp_path):
    return example_copies(tmp_path, truncated_at=3)  # 10 photos (5 distinct), 1 broken


def _build(paths, encoder, root, mirrored=False):
    cache = FeatureCache(root, cache_name(encoder.name, mirrored))
    options = dict(batch_size=3, workers=0, shard_size=2, progress=False, mirrored=mirrored)
    stats = build_cache(paths, encoder, cache, **options)
    return cache, stats


@pytest.mark.parametrize("mirrored", [False, True])
def test_numpy_build_equals_the_torch_build_of_the_same_graph(graph, files, tmp_path, mirrored):
    arrays, arrays_stats = _build(files, GraphEncoder(graph, threads=1), tmp_path / "np", mirrored)
    tensors, tensors_stats = _build(files, OnnxEncoder(graph, threads=1), tmp_path / "pt", mirrored)
    assert (arrays_stats.images, arrays_stats.computed) == (6, 5)  # 5 photos + 1 broken
    assert arrays_stats.failed == tensors_stats.failed and len(arrays_stats.failed) == 1
    assert cache_contents(arrays.dir) == cache_contents(tensors.dir)
    assert len(list(arrays.dir.glob("shard_*.safetensors"))) == 2  # a shard ends with a batch


def test_numpy_build_is_the_torch_encoder_to_float16(graph, files, tmp_path):
    cache, _ = _build(files, GraphEncoder(graph), tmp_path)
    photos = [p for p in files if p.name != "truncated.jpg"][:5]
    encoder = tiny_encoder()
    images = torch.stack([encoder.preprocess(open_image(p)) for p in photos])  # (5, 3, 32, 32)
    with torch.inference_mode():
        expected = encoder(images).numpy()  # (5, 16, 4, 4) float32
    got = cache.get_arrays(photos)
    assert got.dtype == np.float16 and got.shape == expected.shape
    np.testing.assert_allclose(got.astype(np.float32), expected, atol=1e-3, rtol=1e-3)
    assert torch.equal(cache.get(photos), torch.from_numpy(got))  # the torch edge: same values


def test_numpy_build_resumes(graph, files, tmp_path):
    _build(files[:4], GraphEncoder(graph), tmp_path)
    cache, stats = _build(files, GraphEncoder(graph), tmp_path)
    assert (stats.cached_before, stats.computed) == (3, 2)
    assert sorted(cache.entries) == sorted(
        {file_key(p) for p in files if "truncated" not in p.name}
    )
