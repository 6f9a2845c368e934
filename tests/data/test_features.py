"""The feature cache against a direct forward pass of a tiny fake encoder; resume and staleness."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from rnncap import cli
from rnncap.data.datasets import Sample
from rnncap.data.features import FeatureCache, build_cache, file_key


class TinyEncoder(nn.Module):
    """Stands in for a pretrained CNN: same interface (name, out_channels, spatial, preprocess)."""

    def __init__(self, name="tiny", fail_after=None):
        super().__init__()
        torch.manual_seed(0)
        self.name, self.out_channels, self.spatial = name, 4, True
        self.conv = nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=1)
        self.batches = 0
        self.fail_after = fail_after

    def preprocess(self, image):
        image = image.convert("RGB").resize((8, 8))
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)

    def forward(self, x):  # (N, 3, 8, 8) -> (N, 4, 4, 4)
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.batches += 1
        return self.conv(x)


def _write_images(folder, count, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
        path = folder / f"img{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _reference(encoder, paths):
    """The features computed directly, one image at a time, in float32."""
    with torch.no_grad():
        return torch.cat([encoder(encoder.preprocess(Image.open(p))[None]) for p in paths])


def test_cache_matches_direct_forward(tmp_path):
    paths = _write_images(tmp_path / "img", 5)
    encoder = TinyEncoder()
    cache = FeatureCache(tmp_path / "cache", "tiny")
    stats = build_cache(
        paths, encoder, cache, batch_size=2, workers=0, shard_size=3, progress=False
    )
    assert (stats.images, stats.computed, stats.cached_before) == (5, 5, 0)
    expected = _reference(TinyEncoder(), paths)  # (5, 4, 4, 4)
    reopened = FeatureCache(tmp_path / "cache", "tiny")
    got = reopened.get(list(reversed(paths)))
    assert got.dtype == torch.float16 and got.shape == (5, 4, 4, 4)
    torch.testing.assert_close(got.float(), expected.flip(0), atol=2e-3, rtol=2e-3)
    samples = [Sample(paths[3], ["a"]), Sample(paths[0], ["b"])]
    features, names = reopened.load_split(samples)
    assert names == ["img3.png", "img0.png"]
    torch.testing.assert_close(features.float(), expected[[3, 0]], atol=2e-3, rtol=2e-3)
    shards = sorted(p.name for p in (tmp_path / "cache" / "tiny").glob("shard_*.safetensors"))
    assert shards == ["shard_0000.safetensors", "shard_0001.safetensors"]  # 4 + 1 rows


def test_duplicate_contents_are_encoded_once(tmp_path):
    paths = _write_images(tmp_path / "img", 2)
    copy = tmp_path / "img" / "copy.png"
    copy.write_bytes(paths[0].read_bytes())
    cache = FeatureCache(tmp_path / "cache", "tiny")
    stats = build_cache(paths + [copy], TinyEncoder(), cache, workers=0, progress=False)
    assert stats.images == 2 and len(cache) == 2
    torch.testing.assert_close(cache.get([copy]), cache.get([paths[0]]))


def test_resume_after_crash_encodes_only_the_rest(tmp_path):
    paths = _write_images(tmp_path / "img", 7)
    cache = FeatureCache(tmp_path / "cache", "tiny")
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_cache(
            paths,
            TinyEncoder(fail_after=2),
            cache,
            batch_size=2,
            workers=0,
            shard_size=2,
            progress=False,
        )
    resumed = FeatureCache(tmp_path / "cache", "tiny")
    assert len(resumed) == 4  # two finished shards survive
    encoder = TinyEncoder()
    stats = build_cache(paths, encoder, resumed, batch_size=2, workers=0, progress=False)
    assert (stats.cached_before, stats.computed, encoder.batches) == (4, 3, 2)
    expected = _reference(TinyEncoder(), paths)
    got = FeatureCache(tmp_path / "cache", "tiny").get(paths)
    torch.testing.assert_close(got.float(), expected, atol=2e-3, rtol=2e-3)


def test_shard_written_without_index_update_is_adopted(tmp_path):
    paths = _write_images(tmp_path / "img", 4)
    cache = FeatureCache(tmp_path / "cache", "tiny")
    build_cache(paths[:2], TinyEncoder(), cache, workers=0, progress=False)
    index = tmp_path / "cache" / "tiny" / "index.json"
    before = index.read_text()
    build_cache(paths[2:], TinyEncoder(), cache, workers=0, progress=False)
    index.write_text(before)  # as if the process died between the shard rename and the index
    reopened = FeatureCache(tmp_path / "cache", "tiny")
    assert len(reopened) == 4
    torch.testing.assert_close(
        reopened.get(paths).float(), _reference(TinyEncoder(), paths), atol=2e-3, rtol=2e-3
    )


def test_changed_image_or_other_encoder_is_never_served_stale(tmp_path):
    paths = _write_images(tmp_path / "img", 2)
    cache = FeatureCache(tmp_path / "cache", "tiny")
    build_cache(paths, TinyEncoder(), cache, workers=0, progress=False)
    old_key = file_key(paths[0])
    _write_images(tmp_path / "new", 1, seed=1)[0].replace(paths[0])  # same name, new pixels
    assert file_key(paths[0]) != old_key
    with pytest.raises(KeyError, match="1 of 2 images are not in the tiny cache"):
        cache.get(paths)
    stats = build_cache(paths, TinyEncoder(), cache, workers=0, progress=False)
    assert stats.computed == 1
    torch.testing.assert_close(
        cache.get(paths[:1]).float(), _reference(TinyEncoder(), paths[:1]), atol=2e-3, rtol=2e-3
    )
    other = FeatureCache(tmp_path / "cache", "other")
    assert len(other) == 0
    with pytest.raises(KeyError):
        other.get(paths)
    with pytest.raises(ValueError, match="does not match cache"):
        build_cache(paths, TinyEncoder(), other, workers=0, progress=False)


def test_workers_and_unreadable_images(tmp_path, capsys):
    paths = _write_images(tmp_path / "img", 5)
    broken = tmp_path / "img" / "broken.jpg"
    broken.write_bytes(b"not an image")
    cache = FeatureCache(tmp_path / "cache", "tiny")
    stats = build_cache(
        paths + [broken], TinyEncoder(), cache, batch_size=2, workers=2, progress=False
    )
    assert stats.computed == 5 and len(stats.failed) == 1 and "broken.jpg" in stats.failed[0]
    assert "broken.jpg" in capsys.readouterr().err
    torch.testing.assert_close(
        cache.get(paths).float(), _reference(TinyEncoder(), paths), atol=2e-3, rtol=2e-3
    )


def _flickr_folder(root, count, seed=0):
    paths = _write_images(root / "Images", count, seed)
    lines = ["image,caption"] + [f"{p.name},A picture number {i} ." for i, p in enumerate(paths)]
    (root / "captions.txt").write_text("\n".join(lines) + "\n")
    return paths


@pytest.fixture
def fake_encoders(monkeypatch):
    """A tiny encoder registered beside the real ones, as a new entry would be."""
    from rnncap.models import encoders

    monkeypatch.setitem(encoders.ENCODERS, "tiny", lambda **kwargs: TinyEncoder())


def test_command_builds_then_resumes(tmp_path, capsys, fake_encoders):
    paths = _flickr_folder(tmp_path / "data", 3)
    argv = ["features", "--data", str(tmp_path / "data"), "--encoder", "tiny"]
    argv += ["--out", str(tmp_path / "cache"), "--workers", "0", "--device", "cpu", "--quiet"]
    argv += ["--backend", "torch"]  # the fake encoder is not exportable
    assert cli.main(argv) == 0
    assert "3 images, 0 already cached, 3 encoded" in capsys.readouterr().out
    assert cli.main(argv) == 0
    assert "3 already cached, 0 encoded" in capsys.readouterr().out
    index = json.loads((tmp_path / "cache" / "tiny" / "index.json").read_text())
    assert sorted(index["entries"]) == sorted(file_key(p) for p in paths)
    assert cli.main(argv + ["--mirrored"]) == 0  # a cache of its own, beside the plain one
    assert "tiny-mirrored: 3 images, 0 already cached, 3 encoded" in capsys.readouterr().out
    mirrored = json.loads((tmp_path / "cache" / "tiny-mirrored" / "index.json").read_text())
    assert sorted(mirrored["entries"]) == sorted(index["entries"])


def test_command_errors_are_one_line_and_write_nothing(tmp_path, capsys, fake_encoders):
    _flickr_folder(tmp_path / "data", 1)
    out = tmp_path / "cache"
    base = ["features", "--out", str(out), "--device", "cpu"]
    assert cli.main(base + ["--data", str(tmp_path / "missing"), "--encoder", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnncap: error: ") and "missing" in err
    assert cli.main(base + ["--data", str(tmp_path / "data"), "--encoder", "vgg"]) == 2
    assert "rnncap: error: --encoder: unknown encoder 'vgg'" in capsys.readouterr().err
    assert cli.main(base + ["--data", str(tmp_path / "data"), "--batch-size", "0"]) == 2
    assert "--batch-size must be at least 1" in capsys.readouterr().err
    assert not out.exists()


def test_mirrored_cache_holds_the_mirror_images_features(tmp_path):
    """--mirrored flips the preprocessed batch; the reference mirrors the image file with PIL."""
    from PIL import ImageOps

    from rnncap.data.features import cache_name

    paths = _write_images(tmp_path / "img", 3)
    cache = FeatureCache(tmp_path / "cache", cache_name("tiny", mirrored=True))
    assert cache.dir.name == "tiny-mirrored"
    build_cache(paths, TinyEncoder(), cache, batch_size=2, workers=0, progress=False, mirrored=True)
    encoder = TinyEncoder()
    with torch.no_grad():
        expected = torch.cat(
            [encoder(encoder.preprocess(ImageOps.mirror(Image.open(p)))[None]) for p in paths]
        )
    got = FeatureCache(tmp_path / "cache", "tiny-mirrored").get(paths).float()
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=2e-3)
    assert not torch.allclose(got, _reference(TinyEncoder(), paths), atol=0.1)  # not the originals
    with pytest.raises(ValueError, match="does not match"):
        build_cache(
            paths,
            TinyEncoder(),
            FeatureCache(tmp_path / "cache", "tiny"),
            workers=0,
            progress=False,
            mirrored=True,
        )


def test_command_caches_several_sources_and_resumes_a_mixed_cache(tmp_path, capsys, fake_encoders):
    first = _flickr_folder(tmp_path / "first", 3)
    second = _flickr_folder(tmp_path / "second", 2, seed=5)
    argv = [
        "features",
        "--data",
        str(tmp_path / "first"),
        "--encoder",
        "tiny",
        "--out",
        str(tmp_path / "cache"),
        "--workers",
        "0",
        "--device",
        "cpu",
        "--quiet",
        "--backend",
        "torch",
    ]
    assert cli.main(argv) == 0  # the first source alone, as if the mixed run had been cut short
    assert "3 images, 0 already cached, 3 encoded" in capsys.readouterr().out
    mixed = argv + ["--extra-data", f"flickr8k:{tmp_path / 'second'}@2"]
    assert cli.main(mixed) == 0
    assert "5 images, 3 already cached, 2 encoded" in capsys.readouterr().out
    index = json.loads((tmp_path / "cache" / "tiny" / "index.json").read_text())
    assert sorted(index["entries"]) == sorted(file_key(p) for p in first + second)
    cache = FeatureCache(tmp_path / "cache", "tiny")
    encoder = TinyEncoder()
    got = cache.get(second).float()
    assert torch.allclose(got, _reference(encoder, second), atol=2e-3)  # float16 in the cache
    assert cli.main(argv + ["--extra-data", "nope:x"]) == 2
    assert "--extra-data" in capsys.readouterr().err
