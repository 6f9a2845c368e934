"""`rnncap convert-show-tell ENC DEC VOCAB OUT`: the original Show-and-Tell files become a model
folder that `rnncap caption --model OUT` takes; bad input is one line naming the file, exit 2,
and no folder written."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from rnncap.cli import main
from rnncap.models.folder import CONFIG
from support.showtell import photos, reference_caption, write_original


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return write_original(tmp_path_factory.mktemp("showtell"))


def _pkls(original) -> list[str]:
    return [str(original.paths[k]) for k in ("encoder", "decoder", "vocab")]


def test_convert_then_caption(original, tmp_path, capsys):
    out = tmp_path / "st"
    assert main(["convert-show-tell", *_pkls(original), str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{out}: Show-and-Tell model, 30 words (from encoder-5-3000.pkl")
    assert json.loads((out / CONFIG).read_text())["kind"] == "show_tell"

    images = []
    for i, photo in enumerate(photos()):
        images.append(tmp_path / f"photo{i}.png")
        photo.save(images[-1])
    code = main(["caption", *map(str, images), "--model", str(out), "--device", "cpu", "--json"])
    printed, err = capsys.readouterr()
    assert code == 0, err
    with torch.no_grad():
        ids = original.decoder.sample(original.features).tolist()
    rows = [json.loads(line) for line in printed.strip().splitlines()]
    assert [r["caption"] for r in rows] == [reference_caption(row, original.vocab) for row in ids]
    assert [r["image"] for r in rows] == list(map(str, images))

    code = main(["caption", str(images[0]), "--model", str(out), "--attention-out", str(tmp_path)])
    assert code == 2 and "needs an attention model; this one is 'lstm'" in capsys.readouterr().err


def _one_error_line(capsys) -> str:
    printed, err = capsys.readouterr()
    assert printed == "" and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def test_bad_input_is_one_line_naming_the_file(original, tmp_path, capsys):
    encoder, decoder, vocab = _pkls(original)
    out = tmp_path / "st"
    missing = str(tmp_path / "nope.pkl")
    assert main(["convert-show-tell", missing, decoder, vocab, str(out)]) == 2
    assert _one_error_line(capsys) == f"rnncap: error: {missing}: no such file"

    hostile = tmp_path / "vocab.pkl"
    hostile.write_bytes(pickle.dumps(print))
    assert main(["convert-show-tell", encoder, decoder, str(hostile), str(out)]) == 2
    assert _one_error_line(capsys).startswith(f"rnncap: error: {hostile}: not a safe Vocabulary")

    assert main(["convert-show-tell", decoder, encoder, vocab, str(out)]) == 2  # swapped
    assert _one_error_line(capsys).startswith(f"rnncap: error: {encoder}: missing key")
    assert not out.exists()

    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["convert-show-tell", encoder, decoder, vocab, str(out)]) == 2
    assert "exists and is not an empty folder" in _one_error_line(capsys)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
