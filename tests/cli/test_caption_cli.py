"""`rnncap caption`: captions equal one-by-one decoding; bad files are reported, not fatal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from rnncap.cli import main
from rnncap.models.folder import load_model
from support.inference import (
    EXAMPLES,
    bomb_png,
    example_images,
    make_tiny_model,
    reference_captions,
    shared_encoder,
    truncated_jpeg,
)


@pytest.fixture(autouse=True)
def reuse_encoder(monkeypatch):
    """Every model built in this process shares one pretrained encoder instead of rebuilding it."""
    import rnncap.models.encoders as encoders

    encoder = shared_encoder()  # built before the patch: shared_encoder calls build_encoder
    monkeypatch.setattr(encoders, "build_encoder", lambda *args, **kwargs: encoder)


@pytest.fixture(scope="module")
def reference(model_dir):
    model, vocab = load_model(model_dir)
    model.set_encoder(shared_encoder())
    paths = example_images()
    return dict(zip(map(str, paths), reference_captions(model, vocab, paths), strict=True))


@pytest.fixture
def photos(tmp_path):
    """A folder with the sample photos (one in a sub-folder) and a text file to be ignored."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    images = example_images()
    for path in images[:-1]:
        shutil.copy(path, folder / path.name)
    shutil.copy(images[-1], folder / "more" / images[-1].name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _by_name(reference):
    return {name.rsplit("/", 1)[-1]: value for name, value in reference.items()}


def test_folder_captions_match_reference(model_dir, reference, photos, capsys):
    code = main(
        [
            "caption",
            str(photos),
            "--model",
            str(model_dir),
            "--batch-size",
            "2",
            "--workers",
            "2",
            "--device",
            "cpu",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.strip().splitlines()
    expected = _by_name(reference)
    assert len(lines) == len(expected)
    paths = []
    for line in lines:
        path, caption = line.split("\t")
        paths.append(path)
        assert caption == expected[path.rsplit("/", 1)[-1]][0], path
    assert paths == sorted(paths)  # a folder's images come sorted by path
    assert "notes.txt" not in out


def test_json_lines_and_scores(model_dir, reference, capsys):
    paths = [str(p) for p in example_images()[:3]]
    code = main(
        [
            "caption",
            *paths,
            "--model",
            str(model_dir),
            "--json",
            "--workers",
            "0",
            "--device",
            "cpu",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["image"] for r in rows] == paths
    for row in rows:
        caption, score, _ = reference[row["image"]]
        assert set(row) == {"image", "caption", "score"}
        assert row["caption"] == caption
        assert row["score"] == pytest.approx(score, abs=1e-4)


def test_bad_inputs_are_reported_and_the_others_captioned(model_dir, reference, tmp_path, capsys):
    good = example_images()[0]
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("hello, I am not a JPEG\n")
    bad = [
        tmp_path / "missing.jpg",
        empty,
        truncated_jpeg(tmp_path / "truncated.jpg"),
        text,
        bomb_png(tmp_path / "bomb.png"),
    ]
    out_dir = tmp_path / "attention"
    code = main(
        [
            "caption",
            str(good),
            *map(str, bad),
            "--model",
            str(model_dir),
            "--attention-out",
            str(out_dir),
            "--workers",
            "2",
            "--device",
            "cpu",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1
    assert out.splitlines() == [f"{good}\t{reference[str(good)][0]}"]
    err_lines = err.strip().splitlines()
    assert len(err_lines) == len(bad), err
    for path, reason in zip(
        bad,
        ["no such file", "empty", "truncated", "not an image", "decompression bomb"],
        strict=True,
    ):
        line = next(line for line in err_lines if str(path) in line)
        assert line.startswith("rnncap: error: ") and reason in line, line
    assert sorted(p.name for p in out_dir.iterdir()) == [f"{good.stem}.png"]  # no temp files


def test_attention_pngs_one_per_image(model_dir, photos, tmp_path, capsys):
    out_dir = tmp_path / "attention"
    code = main(
        [
            "caption",
            str(photos),
            "--model",
            str(model_dir),
            "--attention-out",
            str(out_dir),
            "--workers",
            "0",
            "--device",
            "cpu",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted(f"{p.stem}.png" for p in example_images())
    for name in names:
        with Image.open(out_dir / name) as png:
            assert png.format == "PNG" and png.width > 200


def test_usage_errors_are_one_line(model_dir, tmp_path, capsys):
    lstm_dir = make_tiny_model(tmp_path / "lstm", cell_type="lstm")
    image = str(example_images()[0])
    cases = [
        (["--model", str(tmp_path / "nope")], "nope: no such file or folder"),
        (["--model", str(lstm_dir), "--attention-out", str(tmp_path / "a")], "attention model"),
        (["--model", str(model_dir), "--beam", "0"], "--beam"),
    ]
    for flags, needle in cases:
        code = main(["caption", image, *flags, "--device", "cpu"])
        out, err = capsys.readouterr()
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "a").exists()


def test_bundled_model_captions_the_examples(capsys):
    from rnncap.models.folder import DEFAULT_MODEL, WEIGHTS

    if not (DEFAULT_MODEL / WEIGHTS).is_file():
        pytest.skip("the bundled default model is not in src/rnncap/assets/default yet")
    code = main(["caption", str(EXAMPLES), "--workers", "0", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [line.split("\t") for line in out.strip().splitlines()]
    assert [Path(path).name for path, _ in lines] == [p.name for p in example_images()]
    assert all(len(caption.split()) >= 2 for _, caption in lines), out
