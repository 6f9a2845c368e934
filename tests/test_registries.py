"""Everything registered is tested through the public API, the day it is registered: each
recurrent cell (`list_cell_types`), each image encoder (`list_encoders`, random weights: no
download) and each data-set format (`list_formats`, a tiny data set written in it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rnncap.data.datasets import list_formats, load_dataset
from rnncap.data.vocab import Vocabulary
from rnncap.decode.beam import DecodeOptions
from rnncap.decode.captioner import Captioner
from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN, list_cell_types
from rnncap.models.encoders import build_encoder, list_encoders
from rnncap.models.folder import load_model, save_model

VOCAB = Vocabulary("a dog cat runs on the grass red".split())  # 12 tokens with the specials


def _model(cell_type: str, feature_dim: int = 16, encoder: str = "efficientnet_lite0"):
    torch.manual_seed(0)
    config = CaptionerConfig(
        encoder=encoder,
        feature_dim=feature_dim,
        cell_type=cell_type,
        wordvec_dim=8,
        hidden_dim=16,
        vocab_size=len(VOCAB),
    )
    return CaptioningRNN(config).eval()


# ---------------------------------------------------------------- recurrent cells


@pytest.mark.parametrize("cell_type", list_cell_types())
def test_every_cell_trains_decodes_and_round_trips(cell_type, tmp_path):
    model = _model(cell_type)
    features = torch.randn(3, 16, 2, 2)  # (N, C, h, w)
    captions = torch.randint(0, len(VOCAB), (3, 5))  # (N, T)
    logits, attention = model(features, captions)
    assert logits.shape == (3, 5, len(VOCAB))
    assert (attention is not None) == (cell_type == "attn")
    if attention is not None:
        assert attention.shape == (3, 5, 4)  # (N, T, P)
    logits.sum().backward()  # every weight of the cell learns
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

    folder = save_model(tmp_path / cell_type, model, VOCAB)
    loaded, vocab = load_model(folder)
    assert loaded.config == model.config and vocab == VOCAB
    options = DecodeOptions(beam_size=2, max_length=6)
    before = Captioner(model, VOCAB, options).caption_features(features)
    after = Captioner(loaded, vocab, options).caption_features(features)
    assert [c.text for c in after] == [c.text for c in before] and len(after) == 3
    assert all(len(c.words) <= 6 for c in after)


# ---------------------------------------------------------------- image encoders


def _photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8))


@pytest.mark.parametrize("name", list_encoders())
def test_every_encoder_feeds_a_captioner(name):
    torch.manual_seed(0)
    encoder = build_encoder(name, pretrained=False)
    model = _model("attn" if encoder.spatial else "lstm", encoder.out_channels, name)
    model.set_encoder(encoder)
    captioner = Captioner(model, VOCAB, DecodeOptions(beam_size=1, max_length=4), backend=None)
    image = captioner.preprocess(_photo())
    assert image.shape == (3, encoder.image_size, encoder.image_size)
    features = captioner.encode_images(image[None])
    assert features.shape[:2] == (1, encoder.out_channels)
    assert features.dim() == (4 if encoder.spatial else 2)  # (1, C, h, w) or (1, C)
    caption = captioner(_photo())
    assert caption.text == captioner.caption_features(features)[0].text
    assert (caption.grid is not None) == encoder.spatial


# ---------------------------------------------------------------- data-set formats

# The same tiny data set: split -> {image file name: its captions}
SPLITS = {
    "train": {"t1.jpg": ["A dog runs.", "A brown dog."], "t2.jpg": ["A cat."]},
    "dev": {"d1.jpg": ["A red ball."]},
    "test": {"s1.jpg": ["A man rides a bike.", "A cyclist."]},
}


def _write_images(folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 8)).save(folder / name, format="JPEG")


def _flickr8k(root: Path) -> None:
    lines = ["image,caption"]
    for split, images in SPLITS.items():
        _write_images(root / "Images", images)
        lines += [f"{name},{c}" for name, captions in images.items() for c in captions]
        (root / f"Flickr_8k.{split}Images.txt").write_text("\n".join(images) + "\n")
    (root / "captions.txt").write_text("\n".join(lines) + "\n")


def _coco(root: Path) -> None:
    for split, tag in (("train", "train2014"), ("dev", "val2014"), ("test", "test2014")):
        images = SPLITS[split]
        _write_images(root / tag, images)
        listed = [{"id": i, "file_name": name} for i, name in enumerate(images)]
        annotations = [
            {"image_id": i, "id": 100 * i + k, "caption": c}
            for i, captions in enumerate(images.values())
            for k, c in enumerate(captions)
        ]
        data = {"images": listed, "annotations": annotations}
        (root / f"captions_{tag}.json").write_text(json.dumps(data))


def _karpathy(root: Path) -> None:
    entries = []
    for split, images in SPLITS.items():
        _write_images(root / "images", images)
        entries += [
            {
                "filepath": "",
                "filename": name,
                "split": {"dev": "val"}.get(split, split),
                "sentences": [{"raw": c} for c in captions],
            }
            for name, captions in images.items()
        ]
    (root / "dataset_tiny.json").write_text(json.dumps({"images": entries}))


# A new format needs a writer here: its test fails (KeyError) until it has one.
WRITERS = {"flickr8k": _flickr8k, "coco": _coco, "karpathy": _karpathy}


@pytest.mark.parametrize("format", list_formats())
def test_every_format_reads_a_tiny_data_set(format, tmp_path):
    WRITERS[format](tmp_path)
    for split, images in SPLITS.items():
        dataset = load_dataset(tmp_path, format, split, report=None)
        assert dataset.references() == images, split
        assert all(sample.image.is_file() for sample in dataset)
    train = load_dataset(tmp_path, format, "train", report=None)
    vocab = Vocabulary.build(train.captions)
    assert vocab.decode(vocab.encode("a brown dog")) == "a brown dog"
