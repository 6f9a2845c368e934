"""The Java-free PTB tokenizer against CoreNLP's output (as pycocoevalcap post-processes it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rnncap.engine.ptb_tokenize import ptb_tokenize

COCO_DEV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "coco_dev"

# Expected outputs are what pycocoevalcap's PTBTokenizer (CoreNLP 3.4.1) returns for these inputs.
CASES = [
    ("", ""),
    ("   ", ""),
    ("A dog runs.", "a dog runs"),
    ("Hello, world! Is it; here: yes?", "hello world is it here yes"),
    ("what?! hi!!", "what ?! hi !!"),
    ("A dog's ball", "a dog 's ball"),
    ("a dog 's ball", "a dog 's ball"),
    ("the dogs' toys", "the dogs toys"),
    ("I can't, won't, don't", "i ca n't wo n't do n't"),
    ("He'll say they're sure I'm here", "he 'll say they 're sure i 'm here"),
    ("cannot gonna", "can not gon na"),
    ("o'clock in the '90s", "o'clock in the '90s"),
    ("a ' devil ' outfit", "a devil outfit"),
    ("it\u2019s \u201cquoted\u201d", "it 's quoted"),
    ('"A crowd"" here ."', "a crowd here"),
    ("a t-shirt and a 4-wheeler", "a t-shirt and a 4-wheeler"),
    ("x--y -- a- -x", "x y a x"),
    ("-5 +5 5-6", "-5 +5 5-6"),
    ("1,000 people, 3.5 m at 6:55", "1,000 people 3.5 m at 6:55"),
    ("$5 and 20% off #1", "$ 5 and 20 % off # 1"),
    ("(almost) [b] {c}", "-lrb- almost -rrb- -lsb- b -rsb- -lcb- c -rcb-"),
    ("Mr. Potato in the U.S.A. e.g. here", "mr. potato in the u.s.a. e.g. here"),
    ("AT&T at&t", "at&t at & t"),
    ("a   dog\tbarks  ", "a dog barks"),
    ("well... done", "well done"),
    ("rock'n'roll y'all", "rock 'n' roll y' all"),
]


@pytest.mark.parametrize(("caption", "expected"), CASES)
def test_tokenize_like_corenlp(caption: str, expected: str) -> None:
    assert " ".join(ptb_tokenize(caption)) == expected


def _java_tokenize(captions: list[str]) -> list[str]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    out = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    return [out[i][0] for i in range(len(captions))]


def _mismatches(captions: list[str]) -> list[tuple[str, str, str]]:
    java = _java_tokenize(captions)
    ours = [" ".join(ptb_tokenize(c)) for c in captions]
    return [(c, j, o) for c, j, o in zip(captions, java, ours, strict=True) if j != o]


needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="the reference needs Java")


@needs_java
def test_every_flickr8k_caption_matches_java(flickr8k_dir: Path) -> None:
    lines = (flickr8k_dir / "captions.txt").read_text(encoding="utf-8").splitlines()[1:]
    captions = [line.split(",", 1)[1] for line in lines if line.strip()]
    mismatches = _mismatches(captions)
    assert not mismatches, f"{len(mismatches)} of {len(captions)} differ, e.g. {mismatches[:3]}"


@needs_java
def test_every_coco_dev_caption_matches_java() -> None:
    annotations = COCO_DEV / "annotations" / "captions_val2017.json"
    if not annotations.is_file():
        pytest.skip(f"COCO dev captions not found at {annotations}")
    captions = [a["caption"] for a in json.loads(annotations.read_text())["annotations"]]
    mismatches = _mismatches(captions)
    assert not mismatches, f"{len(mismatches)} of {len(captions)} differ, e.g. {mismatches[:3]}"
