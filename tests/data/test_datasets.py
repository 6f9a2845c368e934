"""Data set readers on tiny synthetic folders of every format, and on the real Flickr8k."""

import io
import json

import pytest

from rnncap.data.datasets import DatasetError, Sample, load_dataset


def _touch_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"not really a jpeg")


@pytest.fixture
def flickr_dir(tmp_path):
    root = tmp_path / "flickr"
    _touch_images(root / "Images", ["a.jpg", "b.jpg", "c.jpg"])
    (root / "captions.txt").write_text(
        "image,caption\n"
        "a.jpg,A dog runs , fast .\n"  # the caption keeps its commas
        "a.jpg,A brown dog .\n"
        "no comma here\n"  # line 4: malformed
        "b.jpg,A cat sleeps .\n"
        "gone.jpg,A missing image .\n"  # line 6: image missing
        "gone.jpg,Another one .\n"
        "c.jpg,\n"  # line 8: empty caption
        "c.jpg,A bird .\n"
    )
    (root / "Flickr_8k.trainImages.txt").write_text("a.jpg\ngone.jpg\n")
    (root / "Flickr_8k.devImages.txt").write_text("b.jpg\n")
    (root / "Flickr_8k.testImages.txt").write_text("c.jpg\nnever.jpg\n")
    return root


def test_flickr8k_captions_txt(flickr_dir):
    report = io.StringIO()
    train = load_dataset(flickr_dir, "flickr8k", "train", report=report)
    assert train.samples == [
        Sample(flickr_dir / "Images" / "a.jpg", ["A dog runs , fast .", "A brown dog ."])
    ]
    text = report.getvalue()
    assert f"{flickr_dir / 'captions.txt'}:4: malformed line" in text
    assert f"{flickr_dir / 'captions.txt'}:6: image 'gone.jpg' not found" in text
    assert f"{flickr_dir / 'captions.txt'}:8: malformed line" in text
    # skipped: the malformed line, two captions of the missing image, the empty caption
    assert train.skipped == 4
    assert "loaded 1 images, 2 captions; skipped 4" in text


def test_flickr8k_splits_and_all(flickr_dir):
    dev = load_dataset(flickr_dir, "flickr8k", "val", report=None)
    assert dev.split == "dev" and [s.name for s in dev] == ["b.jpg"]
    test = load_dataset(flickr_dir, "flickr8k", "test", report=None)
    assert test.references() == {"c.jpg": ["A bird ."]}
    assert any("never.jpg' has no captions" in p for p in test.problems)
    everything = load_dataset(flickr_dir, "flickr8k", "all", report=None)
    assert [s.name for s in everything] == ["a.jpg", "b.jpg", "c.jpg"]
    assert everything.num_captions == 4
    assert everything.captions == [
        "A dog runs , fast .",
        "A brown dog .",
        "A cat sleeps .",
        "A bird .",
    ]


def test_flickr8k_token_file_and_original_image_folder(tmp_path):
    root = tmp_path / "orig"
    _touch_images(root / "Flicker8k_Dataset", ["x.jpg", "y.jpg"])
    text = root / "Flickr8k_text"
    text.mkdir()
    (text / "Flickr8k.token.txt").write_text(
        "x.jpg#0\tA man, smiling .\nx.jpg#1\tA man .\nbroken line\ny.jpg.1#0\tNo such image .\n"
        "y.jpg#0\tA tree .\n"
    )
    (text / "Flickr_8k.trainImages.txt").write_text("x.jpg\ny.jpg\n")
    report = io.StringIO()
    data = load_dataset(root, "flickr8k", "train", report=report)
    assert data.references() == {"x.jpg": ["A man, smiling .", "A man ."], "y.jpg": ["A tree ."]}
    assert data[0].image == root / "Flicker8k_Dataset" / "x.jpg"
    assert f"{text / 'Flickr8k.token.txt'}:3: malformed line" in report.getvalue()
    assert f"{text / 'Flickr8k.token.txt'}:4: image 'y.jpg.1' not found" in report.getvalue()
    assert data.skipped == 2


def test_coco(tmp_path):
    root = tmp_path / "coco"
    _touch_images(root / "val2014", ["COCO_val_1.jpg", "COCO_val_2.jpg"])
    (root / "annotations").mkdir()
    data = {
        "images": [
            {"id": 1, "file_name": "COCO_val_1.jpg"},
            {"id": 2, "file_name": "COCO_val_2.jpg"},
            {"id": 3, "file_name": "COCO_val_3.jpg"},
        ],
        "annotations": [
            {"image_id": 1, "id": 10, "caption": "A plane in the sky."},
            {"image_id": 2, "id": 11, "caption": "A red bus."},
            {"image_id": 1, "id": 12, "caption": "An airplane flying."},
            {"image_id": 3, "id": 13, "caption": "Image file is missing."},
            {"image_id": 9, "id": 14, "caption": "Unknown image id."},
            {"id": 15},
        ],
    }
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps(data))
    report = io.StringIO()
    dev = load_dataset(root, "coco", "dev", report=report)
    assert dev.references() == {
        "COCO_val_1.jpg": ["A plane in the sky.", "An airplane flying."],
        "COCO_val_2.jpg": ["A red bus."],
    }
    assert dev[0].image == root / "val2014" / "COCO_val_1.jpg"
    assert dev.skipped == 3
    text = report.getvalue()
    assert "annotations[3]: image 'COCO_val_3.jpg' not found" in text
    assert "annotations[4]: image id 9 is not in the images list" in text
    assert "annotations[5]: malformed annotation" in text
    with pytest.raises(DatasetError, match="captions_train"):
        load_dataset(root, "coco", "train", report=None)


def test_karpathy(tmp_path):
    root = tmp_path / "karpathy"
    _touch_images(root / "images" / "val2014", ["v1.jpg", "v2.jpg"])
    _touch_images(root / "images" / "train2014", ["t1.jpg"])

    def image(filepath, filename, split, *raws):
        sentences = [{"raw": r, "tokens": r.lower().split()} for r in raws]
        return {"filepath": filepath, "filename": filename, "split": split, "sentences": sentences}

    images = [
        image("val2014", "v1.jpg", "test", "A cat.", "A small cat."),
        image("val2014", "v2.jpg", "restval", "A dog."),
        image("train2014", "t1.jpg", "train", "A horse."),
        image("val2014", "v3.jpg", "val", "Missing file."),
        {"filename": "broken.jpg"},
    ]
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    report = io.StringIO()
    train = load_dataset(root, "karpathy", "train", report=report)  # train + restval
    assert train.references() == {"v2.jpg": ["A dog."], "t1.jpg": ["A horse."]}
    assert train[1].image == root / "images" / "train2014" / "t1.jpg"
    assert "images[4]: malformed image entry" in report.getvalue()
    test = load_dataset(root / "dataset_coco.json", "karpathy", "test", report=None)
    assert test.references() == {"v1.jpg": ["A cat.", "A small cat."]}
    with pytest.raises(DatasetError, match="no usable dev samples"):
        load_dataset(root, "karpathy", "dev", report=None)  # its only image is missing


def test_errors_name_the_problem(tmp_path, flickr_dir):
    with pytest.raises(DatasetError, match="unknown format 'voc'.*flickr8k, coco, karpathy"):
        load_dataset(flickr_dir, "voc", "train")
    with pytest.raises(DatasetError, match="unknown split 'holdout'"):
        load_dataset(flickr_dir, "flickr8k", "holdout")
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "nowhere", "flickr8k", "train")
    with pytest.raises(DatasetError, match="Flickr8k captions file not found"):
        load_dataset(tmp_path, "flickr8k", "train")


def test_real_flickr8k(flickr8k_dir):
    sizes = {"train": 6000, "dev": 1000, "test": 1000}
    names = {}
    for split, size in sizes.items():
        data = load_dataset(flickr8k_dir, "flickr8k", split, report=None)
        assert len(data) == size and data.skipped == 0 and not data.problems
        assert all(len(s.captions) == 5 for s in data)
        names[split] = {s.name for s in data}
    assert not (names["train"] & names["dev"]) and not (names["train"] & names["test"])
    everything = load_dataset(flickr8k_dir, "flickr8k", "all", report=None)
    assert len(everything) == 8091 and everything.num_captions == 40455
    assert everything[0].name == "1000268201_693b08cb0e.jpg"
    assert everything[0].captions[0].startswith("A child in a pink dress")
