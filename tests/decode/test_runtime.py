"""Captioning without torch: the default model exported with its encoder.onnx, captioned in a
process where torch cannot be imported, gives the pinned captions of examples/; a folder's
encoder.onnx is used as it is (never exported again) once its SHA-256 matches, and a tiny model
captions the photos as the torch path does."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import rnncap
import rnncap.decode.runtime as runtime
import rnncap.models.encoders as encoders
from rnncap.data.images import open_image
from rnncap.models.encoder_export import export_into
from support.blocked import blocker
from support.inference import (
    example_images,
    forbid_encoder_export,
    make_tiny_encoder_model,
    make_tiny_model,
    reference_captions,
    shared_encoder,
    tiny_encoder,
)

REPO = Path(__file__).resolve().parents[2]
EXPECTED = REPO / "tests" / "expected" / "default_model_captions.json"

NO_TORCH = blocker(["torch", "torchvision"])

CAPTION = """
import json, pathlib, rnncap
captioner = rnncap.load(sys.argv[1])
paths = sorted(pathlib.Path(sys.argv[2]).glob("*.jpg"))
captions = {p.name: r.text for p, r in zip(paths, captioner.caption_files(paths, progress=False))}
assert not any(m.split(".")[0] == "torch" for m in sys.modules)
print(json.dumps({"backend": captioner.backend, "captions": captions}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runtime") / "default"
    subprocess.run(
        [sys.executable, "-m", "rnncap.cli", "export", "default", str(out)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.mark.slow
def test_default_model_without_torch_gives_the_pinned_captions(exported):
    run = subprocess.run(
        [sys.executable, "-c", NO_TORCH + CAPTION, str(exported), str(REPO / "examples")],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(run.stdout)
    assert result["backend"] == "runtime"
    assert result["captions"] == json.loads(EXPECTED.read_text(encoding="utf-8"))["captions"]


@pytest.fixture
def tiny_encoders(tmp_path, monkeypatch):
    """build_encoder gives the tiny 16-channel encoder; the user cache is the test's own."""
    monkeypatch.setattr(encoders, "build_encoder", lambda *args, **kwargs: tiny_encoder())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_the_folders_encoder_is_used_without_exporting(tmp_path, tiny_encoders, monkeypatch):
    folder = make_tiny_encoder_model(tmp_path / "m")
    export_into(folder)
    forbid_encoder_export(monkeypatch)
    captioner = rnncap.load(folder, backend="runtime")
    assert captioner.backend == "runtime" and captioner.encoder.path == folder / "encoder.onnx"
    assert len(captioner(example_images()[:2])) == 2
    # nothing went to rnncap's user cache (ONNX Runtime keeps its own files beside it)
    assert not (tmp_path / "cache" / "rnncap").exists()


def test_files_stream_in_order_while_the_next_batch_is_read(tmp_path, tiny_encoders):
    """The runtime reads each batch of files in a thread while the one before is captioned:
    the results come in input order, with the unusable files (a whole batch of them too) as
    Failed, each caption the one of its image captioned alone; a stream left early stops."""
    folder = make_tiny_encoder_model(tmp_path / "m")
    export_into(folder)
    captioner = rnncap.load(folder, backend="runtime")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"junk")
    good = example_images()[:3]
    paths = [good[0], bad, bad, bad, good[1], bad, good[2]]
    results = list(captioner.caption_files(paths, progress=False, batch_size=2))
    assert [r.image for r in results] == [str(p) for p in paths]
    failed = [i for i, r in enumerate(results) if isinstance(r, rnncap.Failed)]
    assert failed == [1, 2, 3, 5] and "bad.jpg" in results[1].reason
    alone = [captioner(p).text for p in good]
    assert [results[i].text for i in (0, 4, 6)] == alone
    assert list(captioner.caption_files([], progress=False)) == []
    stream = captioner.caption_files(good * 4, progress=False, batch_size=2)
    assert next(stream).text == alone[0]
    stream.close()


def test_a_changed_encoder_is_refused_in_one_line(tmp_path, tiny_encoders):
    folder = make_tiny_encoder_model(tmp_path / "m")
    graph = export_into(folder).path
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the weights: still a graph ONNX Runtime would run
    graph.write_bytes(bytes(data))
    with pytest.raises(rnncap.RnncapError) as error:  # the onnx backend's check: tests/cli
        rnncap.load(folder, backend="runtime")
    assert str(error.value) == (
        f"{graph}: its SHA-256 differs from the one config.json records: the file changed "
        "after rnncap export (export it again)"
    )


def test_another_encoders_graph_is_refused(tmp_path, monkeypatch):
    folder = make_tiny_encoder_model(tmp_path / "m")
    pooled = tiny_encoder(spatial=False)
    pooled.name = "pooled"
    monkeypatch.setattr(encoders, "build_encoder", lambda *args, **kwargs: pooled)
    export_into(folder)
    with pytest.raises(
        rnncap.RnncapError, match="a pooled encoder of 16 channels, but the model's is tiny of 16"
    ):
        rnncap.load(folder, backend="runtime")


def test_a_folder_without_encoder_exports_once_into_the_cache(
    tmp_path, tiny_encoders, monkeypatch, capsys
):
    """With torch installed; without it, the folder's encoder.onnx is required."""
    folder = make_tiny_encoder_model(tmp_path / "m")
    first = rnncap.load(folder, backend="runtime")
    assert "exporting encoder tiny to ONNX once" in capsys.readouterr().err
    assert first.encoder.path.parent == tmp_path / "cache" / "rnncap" / "encoders"
    forbid_encoder_export(monkeypatch)
    again = rnncap.load(folder, backend="runtime")
    assert again.encoder.path == first.encoder.path and capsys.readouterr().err == ""
    monkeypatch.setattr(runtime, "torch_available", lambda: False)
    with pytest.raises(rnncap.ModelError, match="no encoder.onnx; captioning without torch"):
        rnncap.load(folder, backend="runtime")


@pytest.mark.slow
def test_runtime_captions_are_the_torch_captions(tmp_path, monkeypatch):
    """A tiny model on the pretrained encoder: the folder's encoder.onnx and the NumPy decoder
    against the plain torch beam search image by image, then with classifier guidance (the
    graph's class logits against the torch classifier's) against the torch captioner."""
    pretrained = shared_encoder()  # built before build_encoder is patched to return it
    monkeypatch.setattr(encoders, "build_encoder", lambda *args, **kwargs: pretrained)
    folder = make_tiny_model(tmp_path / "m")
    export_into(folder)
    forbid_encoder_export(monkeypatch)
    by_runtime = rnncap.load(folder, backend="runtime")
    by_torch = rnncap.load(folder, device="cpu", backend="torch")
    by_torch.model.set_encoder(pretrained)
    paths = example_images()
    expected = reference_captions(by_torch.model, by_torch.vocab, paths)
    for got, (text, score, _) in zip(by_runtime(paths), expected, strict=True):
        assert got.text == text and got.score == pytest.approx(score, abs=1e-4)
    guided = dataclasses.replace(by_runtime.options, guidance=3.0, guidance_threshold=0.1)
    pixels = np.stack([by_runtime.preprocess(open_image(p)) for p in paths])
    got = by_runtime.caption_images(pixels, options=guided)
    want = by_torch.caption_images(torch.from_numpy(pixels), options=guided)
    assert [c.text for c in got] == [c.text for c in want]
    assert [c.score for c in got] == pytest.approx([c.score for c in want], abs=1e-4)
    assert [c.text for c in got] != [c.text for c in by_runtime.caption_images(pixels)]


@pytest.mark.slow
def test_command_line_without_torch(exported, tmp_path):
    """`rnncap caption` runs on the runtime; a command that needs torch says so, exit 2."""
    cli = "from rnncap.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    caption = subprocess.run(
        [
            sys.executable,
            "-c",
            NO_TORCH + cli,
            "caption",
            "--model",
            str(exported),
            str(REPO / "examples" / "cat.jpg"),
        ],
        capture_output=True,
        text=True,
    )
    assert caption.returncode == 0, caption.stderr
    pinned = json.loads(EXPECTED.read_text(encoding="utf-8"))["captions"]["cat.jpg"]
    assert caption.stdout.strip().endswith(pinned)
    export = subprocess.run(
        [sys.executable, "-c", NO_TORCH + cli, "export", "default", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert export.returncode == 2
    assert export.stderr.strip().splitlines() == [
        "rnncap: error: 'rnncap export' needs the train extra (torch is not installed): "
        "pip install 'rnncap[train]'"
    ]
