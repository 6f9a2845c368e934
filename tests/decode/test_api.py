"""The public API: `rnncap.load(...)` -> Captioner, called on every kind of image input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import rnncap
from support.inference import example_images, reference_captions, shared_encoder


@pytest.fixture(scope="module")
def captioner(model_dir):
    captioner = rnncap.load(model_dir, device="cpu")
    captioner.model.set_encoder(shared_encoder())
    return captioner


@pytest.fixture(scope="module")
def reference(captioner):
    paths = example_images()[:3]
    return [text for text, _, _ in reference_captions(captioner.model, captioner.vocab, paths)]


def test_import_rnncap_does_not_import_torch():
    code = (
        "import sys, rnncap\n"
        "assert rnncap.__version__\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
        "assert callable(rnncap.load) and rnncap.DecodeOptions().beam_size\n"
        "assert 'torch' not in sys.modules, 'the captioning API imports torch only to load'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_input_kind_gives_the_reference_caption(captioner, reference):
    path = example_images()[0]
    with Image.open(path) as image:
        pil = image.convert("RGB")
    inputs = [str(path), path, pil, np.asarray(pil), path.read_bytes()]
    for x in inputs:
        caption = captioner(x)
        assert isinstance(caption, rnncap.Caption)
        assert caption.text == reference[0], type(x)
        assert caption.words == caption.text.split()
        assert caption.attention.shape == (len(caption.words), 49) and caption.grid == (7, 7)
    assert captioner(str(path)).image == str(path) and captioner(pil).image is None


def test_a_list_is_one_batch_in_order(captioner, reference):
    paths = example_images()[:3]
    captions = captioner(paths)
    assert [c.text for c in captions] == reference
    assert captioner([]) == []


def test_keywords_override_the_decoding_options(captioner):
    path = example_images()[0]
    assert len(captioner(path, max_length=2).words) <= 2
    greedy = captioner(path, beam=1)
    features = captioner.model.encode(captioner.preprocess(Image.open(path).convert("RGB"))[None])
    options = captioner.decode_options(beam=1)
    assert captioner.caption_features(features, options)[0].text == greedy.text
    assert captioner.options.beam_size == 3  # the held options are unchanged


@pytest.mark.parametrize(
    "bad, named",
    [
        (b"not an image at all", "input (bytes): not an image"),
        (b"", "input (bytes): empty file"),
        (np.zeros((4, 4), dtype=np.uint8), "input: an array must be (H, W, 3) uint8"),
        (np.zeros((4, 4, 3), dtype=np.float32), "input: an array must be (H, W, 3) uint8"),
        (42, "input: cannot caption a int"),
        ("/nowhere/photo.jpg", "/nowhere/photo.jpg: no such file"),
    ],
)
def test_bad_input_raises_one_error_type_naming_the_item(captioner, bad, named):
    with pytest.raises(rnncap.CaptionError) as error:
        captioner(bad)
    assert isinstance(error.value, ValueError)
    assert str(error.value).startswith(named), str(error.value)


def test_bad_item_in_a_list_is_named_by_its_index(captioner):
    with pytest.raises(rnncap.CaptionError, match=r"^item 1 \(bytes\): not an image"):
        captioner([example_images()[0], b"junk"])


def test_caption_files_streams_in_order_with_failures(captioner, reference, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"junk")
    paths = [*example_images()[:2], bad, example_images()[2]]
    results = list(captioner.caption_files(paths, progress=False, batch_size=2, workers=0))
    assert [r.image for r in results] == [str(p) for p in paths]
    assert isinstance(results[2], rnncap.Failed) and "bad.jpg" in results[2].reason
    texts = [r.text for r in results if isinstance(r, rnncap.Caption)]
    assert texts == reference


def test_decoding_defaults_come_from_the_model_folder(model_dir, tmp_path):
    import shutil

    folder = tmp_path / "tuned"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["decoding"] = {"beam_size": 5, "length_penalty": 0.7}
    (folder / "config.json").write_text(json.dumps(config))
    options = rnncap.load(folder, device="cpu").options
    assert (options.beam_size, options.length_penalty, options.max_length) == (5, 0.7, None)
    assert rnncap.load(model_dir, device="cpu").options == rnncap.DecodeOptions()
    config["decoding"] = {"beam": 5}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="beam: not one of the decoding options"):
        rnncap.load(folder, device="cpu")


def test_unknown_backend_is_a_clear_error(model_dir):
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'; valid backends: auto, onnx"):
        rnncap.load(model_dir, device="cpu", backend="tensorrt")
    assert rnncap.load(model_dir, device=torch.device("cpu"), backend="torch").backend == "torch"


def test_onnx_backend_gives_the_torch_captions(model_dir, reference):
    pytest.importorskip("onnxruntime")
    from rnncap.models.onnx_encoder import OnnxEncoder

    captioner = rnncap.load(model_dir, device="cpu", backend="onnx")
    assert captioner.backend == "onnx" and isinstance(captioner.model.encoder, OnnxEncoder)
    captions = captioner(example_images()[:3])
    assert [c.text for c in captions] == reference
    assert captions[0].attention.shape == (len(captions[0].words), 49)  # the grid is kept
    assert rnncap.load(model_dir, device="cpu").backend == "onnx"  # auto on a CPU
    with pytest.raises(ValueError, match="the onnx backend runs on the CPU"):
        rnncap.load(model_dir, device=torch.device("cuda"), backend="onnx")
