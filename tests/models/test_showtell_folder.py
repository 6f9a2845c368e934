"""A Show-and-Tell model saved as a model folder (`rnncap.models.showtell_folder`) is a model like
any other for `rnncap.load`: its captions are the original tutorial pipeline's, computed
independently (`support.showtell`), and a damaged folder is a one-line error naming the file."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import rnncap
from rnncap.decode.beam import DecodeOptions
from rnncap.decode.captioner import Captioner
from rnncap.models.folder import CONFIG, VOCAB, WEIGHTS, load_model
from rnncap.models.showtell import load_show_tell
from rnncap.models.showtell_folder import save_show_tell
from support.showtell import photos, reference_caption, write_original


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The original files, and the folder they were converted into."""
    files = write_original(tmp_path_factory.mktemp("showtell"))
    model = load_show_tell(*(files.paths[k] for k in ("encoder", "decoder", "vocab")))
    files.direct = model
    files.folder = save_show_tell(tmp_path_factory.mktemp("model") / "st", model)
    return files


def test_the_folder_captions_as_the_original_pipeline(converted):
    with torch.no_grad():
        expected_ids = converted.decoder.sample(converted.features)
    expected = [reference_caption(row, converted.vocab) for row in expected_ids.tolist()]

    captioner = rnncap.load(converted.folder, device="cpu")
    captions = captioner(photos())
    assert [c.text for c in captions] == expected and len(set(expected)) == 2
    assert captioner.backend == "torch" and captioner.options.beam_size == 1  # the original's
    assert captioner.config.cell_type == "lstm" and all(c.attention is None for c in captions)

    direct = Captioner(converted.direct, converted.direct.vocab, DecodeOptions(beam_size=1))
    assert [c.score for c in captions] == [c.score for c in direct(photos())]


def test_the_folder_captions_files_and_wider_beams(converted, tmp_path):
    paths = []
    for i, photo in enumerate(photos()):
        paths.append(tmp_path / f"photo{i}.png")
        photo.save(paths[-1])
    captioner = rnncap.load(converted.folder, device="cpu")
    results = list(captioner.caption_files(paths, progress=False, workers=0, beam=3))
    direct = Captioner(converted.direct, converted.direct.vocab, DecodeOptions(beam_size=3))
    expected = direct(photos())
    assert [r.text for r in results] == [c.text for c in expected]
    assert [r.score for r in results] == pytest.approx([c.score for c in expected], abs=1e-5)


def _copy(converted, tmp_path):
    """The converted folder's config.json and vocab.json copied, its weights linked."""
    folder = tmp_path / "copy"
    folder.mkdir(parents=True)
    for name in (CONFIG, VOCAB):
        shutil.copy(converted.folder / name, folder / name)
    (folder / WEIGHTS).symlink_to(converted.folder / WEIGHTS)
    return folder


def test_damaged_folders_are_one_line_errors_naming_the_file(converted, tmp_path):
    folder = _copy(converted, tmp_path)
    words = json.loads((folder / VOCAB).read_text())["tokens"]
    (folder / VOCAB).write_text(json.dumps({"tokens": words[:-1]}))
    with pytest.raises(rnncap.RnncapError) as raised:
        rnncap.load(folder, device="cpu")
    assert f"{folder / CONFIG}: show_tell.vocab_size must be 29" in str(raised.value)

    (folder / VOCAB).write_text(json.dumps({"tokens": [w for w in words if w != "<end>"]}))
    with pytest.raises(rnncap.RnncapError, match=f"{folder / VOCAB}: .*<end>"):
        rnncap.load(folder, device="cpu")

    folder = _copy(converted, tmp_path / "2")
    with open(converted.folder / WEIGHTS, "rb") as weights:
        head = weights.read(1000)
    (folder / WEIGHTS).unlink()
    (folder / WEIGHTS).write_bytes(head)
    with pytest.raises(rnncap.RnncapError, match=f"{folder / WEIGHTS}: truncated"):
        rnncap.load(folder, device="cpu")


def test_what_a_show_and_tell_folder_cannot_do(converted, tmp_path):
    with pytest.raises(rnncap.ConfigError, match="backend: .*Show-and-Tell .* torch only"):
        rnncap.load(converted.folder, device="cpu", backend="onnx")
    with pytest.raises(rnncap.RnncapError, match=f"{converted.folder / CONFIG}: .*Show-and-Tell"):
        load_model(converted.folder)  # training, averaging and export need a CaptioningRNN
    folder = _copy(converted, tmp_path)
    config = json.loads((folder / CONFIG).read_text())
    config["decoding"]["guidance"] = 2.0
    (folder / CONFIG).write_text(json.dumps(config))
    with pytest.raises(rnncap.RnncapError, match="decoding.guidance: not available"):
        rnncap.load(folder, device="cpu")
