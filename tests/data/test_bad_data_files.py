"""Hostile data files: caption lines that are not UTF-8, folders that cannot be listed, damaged
feature-cache shards. Each is reported naming the file (and line), never a traceback."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from rnncap import cli
from rnncap.data.datasets import load_dataset
from rnncap.data.features import FeatureCache, build_cache, file_key
from rnncap.data.images import find_images
from rnncap.utils.io import InvalidFileError
from support.tinydata import make_dataset


def _flickr(root, count=3, bad_line=b""):
    (root / "Images").mkdir(parents=True)
    lines = [b"image,caption"]
    for i in range(count):
        pixels = np.random.default_rng(i).integers(0, 256, (10, 12, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "Images" / f"img{i}.png")
        lines.append(f"img{i}.png,a picture number {i} .".encode())
    lines.insert(2, bad_line or b"img0.png,a caf\xe9 in latin-1 \xff")
    (root / "captions.txt").write_bytes(b"\n".join(lines) + b"\n")
    return root


def test_a_line_that_is_not_utf8_is_reported_and_skipped(tmp_path):
    root = _flickr(tmp_path / "data")
    dataset = load_dataset(root, "flickr8k", "all", report=None)
    assert len(dataset) == 3 and dataset.num_captions == 3
    assert dataset.skipped == 1
    assert dataset.problems == [
        f"{root / 'captions.txt'}:3: not UTF-8 text (byte 0xe9 at column 15)"
    ]


def test_split_file_lines_that_are_not_utf8(tmp_path):
    root = _flickr(tmp_path / "data")
    (root / "Flickr_8k.trainImages.txt").write_bytes(b"img1.png\n\xff\xfe.png\nimg2.png\n")
    dataset = load_dataset(root, "flickr8k", "train", report=None)
    assert [s.name for s in dataset] == ["img1.png", "img2.png"]
    assert f"{root / 'Flickr_8k.trainImages.txt'}:2: not UTF-8 text" in dataset.problems[-1]


def test_train_dry_run_skips_the_bad_line_and_names_it(tmp_path, capsys):
    root = make_dataset(tmp_path / "tiny")
    data = (root / "captions.txt").read_bytes().replace(b"img003.jpg,", b"img003.jpg,\xff", 1)
    (root / "captions.txt").write_bytes(data)
    argv = ["train", "--data", str(root), "--features", str(root / "cache"), "--encoder", "fake"]
    argv += ["--out", str(tmp_path / "run"), "--dry-run", "--min-count", "1", "--no-progress"]
    assert cli.main(argv + ["--device", "cpu", "--hidden-dim", "16", "--wordvec-dim", "8"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {root / 'captions.txt'}:17: not UTF-8 text (byte 0xff at column 12)" in err
    assert "--out" not in err and "Traceback" not in err


def test_a_folder_that_cannot_be_listed_is_reported(tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    (folder / "ok").mkdir(parents=True)
    (folder / "locked").mkdir()
    Image.new("RGB", (4, 4)).save(folder / "ok" / "a.png")
    scandir = os.scandir

    def refuse_locked(path="."):  # root may list anything: simulate a permission error
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    images, problems = find_images([folder])
    assert images == [folder / "ok" / "a.png"]
    assert problems == [f"{folder / 'locked'}: cannot read folder (Permission denied)"]


# ------------------------------------------------------------------------ feature cache
class TinyEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.name, self.out_channels, self.spatial = "tiny", 4, True
        self.conv = nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=1)
        self.encoded = 0

    def preprocess(self, image):
        image = image.convert("RGB").resize((8, 8))
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)

    def forward(self, x):
        self.encoded += len(x)
        return self.conv(x)


@pytest.fixture
def cache_dir(tmp_path):
    paths = sorted((_flickr(tmp_path / "data", count=6) / "Images").glob("*.png"))
    cache = FeatureCache(tmp_path / "cache", "tiny")
    build_cache(paths, TinyEncoder(), cache, batch_size=3, workers=0, shard_size=3, progress=False)
    return tmp_path / "cache", paths


def _shard(cache_root, n=0):
    return cache_root / "tiny" / f"shard_{n:04d}.safetensors"


def test_shards_and_index_have_the_same_ordinary_mode(cache_dir):
    root, _ = cache_dir
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (root / "tiny").iterdir()}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask), modes
    index = json.loads((root / "tiny" / "index.json").read_text())
    assert set(index["shards"]) == {"0", "1"}
    assert index["shards"]["0"]["bytes"] == _shard(root).stat().st_size


def test_a_truncated_shard_is_not_cached_and_is_re_encoded(cache_dir, capsys):
    root, paths = cache_dir
    data = _shard(root).read_bytes()
    _shard(root).write_bytes(data[: len(data) // 2])
    cache = FeatureCache(root, "tiny")
    assert len(cache) == 3 and 0 in cache.damaged  # the 3 rows of shard 0 are gone
    with pytest.raises(KeyError, match="shard_0000.safetensors is damaged"):
        cache.get(paths)
    encoder = TinyEncoder()
    stats = build_cache(paths, encoder, cache, workers=0, progress=False)
    assert (stats.cached_before, stats.computed, encoder.encoded) == (3, 3, 3)
    assert "shard_0000.safetensors: damaged feature shard" in capsys.readouterr().err
    reopened = FeatureCache(root, "tiny")
    assert not reopened.damaged and reopened.get(paths).shape == (6, 4, 4, 4)


def test_a_corrupt_shard_of_the_right_size_is_caught_by_its_checksum(cache_dir):
    root, paths = cache_dir
    data = bytearray(_shard(root, 1).read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the features
    _shard(root, 1).write_bytes(bytes(data))
    cache = FeatureCache(root, "tiny")
    with pytest.raises(InvalidFileError, match="shard_0001.safetensors: damaged feature shard"):
        cache.get(paths)
    assert file_key(paths[0]) in cache and file_key(paths[5]) not in cache
    stats = build_cache(paths, TinyEncoder(), FeatureCache(root, "tiny"), workers=0, progress=False)
    assert stats.computed == 3


def test_features_command_re_encodes_a_damaged_shard(cache_dir, capsys, monkeypatch):
    root, paths = cache_dir
    from rnncap.models import encoders

    monkeypatch.setitem(encoders.ENCODERS, "tiny", lambda **kwargs: TinyEncoder())
    _shard(root).write_bytes(b"")
    argv = ["features", "--data", str(paths[0].parents[1]), "--encoder", "tiny", "--out"]
    assert cli.main(argv + [str(root), "--workers", "0", "--device", "cpu", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "6 images, 3 already cached, 3 encoded" in captured.out
    assert (
        f"warning: {_shard(root)}: damaged feature shard (truncated or overwritten: 0 bytes"
        in captured.err
    )


def test_index_that_is_not_json_is_one_line(cache_dir, capsys, monkeypatch):
    root, paths = cache_dir
    (root / "tiny" / "index.json").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(InvalidFileError, match="index.json: not a feature cache index"):
        FeatureCache(root, "tiny")


def test_train_on_a_truncated_shard_is_one_line(tmp_path, capsys):
    root = make_dataset(tmp_path / "tiny")
    (shard,) = (root / "cache" / "fake").glob("shard_*.safetensors")
    shard.write_bytes(shard.read_bytes()[:1000])
    argv = ["train", "--data", str(root), "--features", str(root / "cache"), "--encoder", "fake"]
    argv += ["--out", str(tmp_path / "run"), "--dry-run", "--no-progress", "--device", "cpu"]
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("rnncap: error: 12 of 12 images are not in the fake cache")
    assert f"{shard.name} is damaged (truncated or overwritten: 1000 bytes, the index " in lines[-1]
    assert not any("Traceback" in line for line in lines)
