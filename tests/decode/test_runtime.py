"""Captioning without torch: the default model exported with its encoder.onnx, captioned in a
process where torch cannot be imported, gives the pinned captions of examples/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.blocked import blocker

REPO = Path(__file__).resolve().parents[2]
EXPECTED = REPO / "tests" / "expected" / "default_model_captions.json"

NO_TORCH = blocker(["torch", "torchvision"])

CAPTION = '''
import json, pathlib, rnncap
captioner = rnncap.load(sys.argv[1])
paths = sorted(pathlib.Path(sys.argv[2]).glob("*.jpg"))
captions = {p.name: r.text for p, r in zip(paths, captioner.caption_files(paths, progress=False))}
assert not any(m.split(".")[0] == "torch" for m in sys.modules)
print(json.dumps({"backend": captioner.backend, "captions": captions}))
'''


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runtime") / "default"
    subprocess.run([sys.executable, "-m", "rnncap.cli", "export", "default", str(out)],
                   check=True, capture_output=True)  # fmt: skip
    return out


@pytest.mark.slow
def test_default_model_without_torch_gives_the_pinned_captions(exported):
    run = subprocess.run(
        [sys.executable, "-c", NO_TORCH + CAPTION, str(exported), str(REPO / "examples")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result = json.loads(run.stdout)
    assert result["backend"] == "runtime"
    assert result["captions"] == json.loads(EXPECTED.read_text(encoding="utf-8"))["captions"]


@pytest.mark.slow
def test_a_changed_encoder_file_is_refused(exported, tmp_path):
    import shutil

    import rnncap
    from rnncap.utils.io import InvalidFileError

    changed = tmp_path / "m"
    shutil.copytree(exported, changed)
    with open(changed / "encoder.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(InvalidFileError, match="SHA-256"):
        rnncap.load(changed, backend="runtime")


def test_runtime_needs_the_folders_encoder():
    import rnncap

    with pytest.raises(rnncap.ModelError, match="encoder.onnx"):
        rnncap.load("default", backend="runtime")


@pytest.mark.slow
def test_command_line_without_torch(exported, tmp_path):
    """`rnncap caption` runs on the runtime; a command that needs torch says so, exit 2."""
    cli = "from rnncap.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    caption = subprocess.run(
        [sys.executable, "-c", NO_TORCH + cli, "caption", "--model", str(exported),
         str(REPO / "examples" / "cat.jpg")], capture_output=True, text=True,
    )  # fmt: skip
    assert caption.returncode == 0, caption.stderr
    pinned = json.loads(EXPECTED.read_text(encoding="utf-8"))["captions"]["cat.jpg"]
    assert caption.stdout.strip().endswith(pinned)
    export = subprocess.run(
        [sys.executable, "-c", NO_TORCH + cli, "export", "default", str(tmp_path / "out")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert export.returncode == 2
    assert export.stderr.strip().splitlines() == [
        "rnncap: error: 'rnncap export' needs the train extra (torch is not installed): "
        "pip install 'rnncap[train]'"
    ]
