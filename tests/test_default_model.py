"""The bundled default model's exact captions of examples/, pinned in
tests/expected/default_model_captions.json.

When the default model is retrained on purpose, its captions change: look at the new ones,
then regenerate the file knowingly with

    .venv/bin/python tests/test_default_model.py --write

and commit it together with the new model. A failure without a new model means decoding,
preprocessing or the encoder changed behaviour.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPECTED = REPO / "tests" / "expected" / "default_model_captions.json"
EXAMPLES = REPO / "examples"


def default_captions() -> dict[str, str]:
    """{file name: caption} of every examples/ photo, as `rnncap caption examples/` makes them."""
    import rnncap

    captioner = rnncap.load("default", device="cpu")
    paths = sorted(EXAMPLES.glob("*.jpg"))
    results = captioner.caption_files(paths, progress=False, workers=0)
    return {Path(r.image).name: r.text for r in results}


def test_default_model_captions_are_pinned():
    from rnncap.models.folder import DEFAULT_MODEL, WEIGHTS

    if not (DEFAULT_MODEL / WEIGHTS).is_file():
        pytest.skip("the bundled default model is not in src/rnncap/assets/default")
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))["captions"]
    assert default_captions() == expected


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: {sys.argv[0]} --write   (rewrites {EXPECTED.relative_to(REPO)})")
    data = {
        "comment": "Captions of examples/ by the bundled default model (its own decoding "
        "settings, CPU). Regenerate only when the default model is retrained: "
        "python tests/test_default_model.py --write",
        "captions": default_captions(),
    }
    EXPECTED.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(data["captions"], indent=1))
