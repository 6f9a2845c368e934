"""A tiny synthetic data set in Flickr8k's layout, with fake cached features, for tests."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from rnncap.data.features import FeatureCache, file_key

WORDS = "a dog cat runs sits on the grass red ball man rides bike".split()


def make_dataset(
    root: Path, n_train: int = 12, n_dev: int = 4, seed: int = 0, cache: Path | None = None
) -> Path:
    """Images whose (fake) features determine their captions, in Flickr8k's file layout; the
    features go to `cache` (default: root/cache)."""
    g = torch.Generator().manual_seed(seed)
    (root / "Images").mkdir(parents=True)
    lines, splits = ["image,caption"], {"train": [], "dev": [], "test": []}
    cache = FeatureCache(cache or root / "cache", "fake")
    keys, feats = [], []
    for i in range(n_train + n_dev):
        name = f"img{i:03d}.jpg"
        Image.new("RGB", (8, 8), (i * 7 % 256, i * 13 % 256, 50)).save(root / "Images" / name)
        topic = torch.randint(0, len(WORDS), (4,), generator=g).tolist()
        for k in range(5):
            words = [WORDS[t] for t in topic[: 2 + k % 3]]
            lines.append(f"{name},{' '.join(words)} .")
        splits["train" if i < n_train else "dev"].append(name)
        keys.append(file_key(root / "Images" / name))
        feature = torch.zeros(len(WORDS), 2, 2)
        feature[topic] = 1.0
        feats.append(feature + 0.1 * torch.randn(feature.shape, generator=g))
    cache.add(keys, torch.stack(feats))
    (root / "captions.txt").write_text("\n".join(lines) + "\n")
    for split, names in splits.items():
        (root / f"Flickr_8k.{split}Images.txt").write_text("\n".join(names) + "\n")
    return root


def tiny_train_config(root: Path, out: Path, **overrides):
    """Training options for a tiny, fast run on `make_dataset`'s data and fake features."""
    from rnncap.engine.train_config import TrainConfig

    options = dict(
        data=str(root),
        features=str(root / "cache"),
        encoder="fake",
        out=str(out),
        cell_type="attn",
        wordvec_dim=8,
        hidden_dim=16,
        dropout=0.0,
        min_count=1,
        epochs=2,
        batch_images=4,
        lr=1e-2,
        warmup_steps=2,
        eval_images=0,
        progress=False,
        device="cpu",
    )
    options.update(overrides)
    return TrainConfig(**options)


def train_killed_after_first_epoch(config, monkeypatch, epochs: int = 1) -> None:
    """Run `train(config)` as if the process were killed right after epoch `epochs`'s
    checkpoint (the first by default)."""
    import pytest

    import rnncap.engine.train as train_module

    real_plot = train_module.plot_training_curves

    def die_after_first_epoch(history, path):
        real_plot(history, path)
        if len(history) >= epochs:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "plot_training_curves", die_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(config)
    monkeypatch.setattr(train_module, "plot_training_curves", real_plot)


def write_flickr8k(root: Path, images: list[Path]) -> Path:
    """A Flickr8k-layout folder of copies of `images`, one caption each, every image in split
    "test" (and "all"), for `rnncap features` and `rnncap evaluate`."""
    import shutil

    (root / "Images").mkdir(parents=True)
    lines = ["image,caption"]
    for path in images:
        shutil.copy(path, root / "Images" / path.name)
        lines.append(f"{path.name},a photo of a {path.stem} .")
    (root / "captions.txt").write_text("\n".join(lines) + "\n")
    (root / "Flickr_8k.testImages.txt").write_text("".join(f"{p.name}\n" for p in images))
    return root


def cache_contents(folder: Path) -> tuple[dict, dict]:
    """(index.json less its shard sizes and checksums, {shard file name: (metadata, features as
    their float16 bit patterns)}) of one encoder's cache folder: equal for caches of equal
    content. The shard files' bytes need not be: safetensors writes the metadata in no fixed
    order."""
    import json

    import numpy as np
    from safetensors import safe_open

    index = json.loads((folder / "index.json").read_text())
    index.pop("shards")
    shards = {}
    for path in sorted(folder.glob("shard_*.safetensors")):
        with safe_open(str(path), framework="np") as f:
            bits = f.get_tensor("features").view(np.uint16)
            shards[path.name] = (f.metadata(), bits.tolist())
    return index, shards
