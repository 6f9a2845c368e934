"""`rnncap evaluate` on a tiny data set: captions match a direct encoder + beam search path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from rnncap.cli import main
from rnncap.data.datasets import load_dataset
from rnncap.data.vocab import Vocabulary
from rnncap.decode.beam import beam_search
from rnncap.engine.evaluate import cider_stderr
from rnncap.engine.metrics import METRICS
from rnncap.engine.ptb_tokenize import ptb_tokenize
from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN
from rnncap.models.folder import load_model, save_model
from support.cider_reference import brute_force_cider_d
from support.tinydata import WORDS, make_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("evalset"))
    vocab = Vocabulary(WORDS)
    torch.manual_seed(0)
    cfg = CaptionerConfig(
        encoder="efficientnet_lite0",
        feature_dim=1280,
        cell_type="attn",
        wordvec_dim=8,
        hidden_dim=16,
        vocab_size=len(vocab),
        max_length=6,
    )
    model_dir = save_model(root / "model", CaptioningRNN(cfg), vocab)
    return root, model_dir


def test_evaluate_scores_the_split_and_writes_json(setup, tmp_path, capsys):
    root, model_dir = setup
    out = tmp_path / "eval.json"
    argv = [
        "evaluate",
        "--model",
        str(model_dir),
        "--data",
        str(root),
        "--split",
        "dev",
        "--beam",
        "2",
        "--json",
        str(out),
        "--workers",
        "0",
        "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert set(result["scores"]) == set(METRICS)
    assert all(name in printed for name in METRICS)
    samples = list(load_dataset(root, "flickr8k", "dev"))
    captions = {p["image"]: p["caption"] for p in result["predictions"]}
    references = {s.name: list(s.captions) for s in samples}
    assert result["cider_stderr"] == pytest.approx(cider_stderr(references, captions), abs=1e-12)
    assert f"+- {result['cider_stderr']:.3f}" in printed
    # Independent path: open each image, preprocess, run the encoder, beam search one image.
    model, vocab = load_model(model_dir)
    for p in result["predictions"]:
        image = Image.open(root / "Images" / p["image"]).convert("RGB")
        with torch.no_grad():
            features = model.encoder(model.encoder.preprocess(image)[None])
        decoded = beam_search(model, features.half().float(), beam_size=2)
        assert p["caption"] == vocab.decode(decoded.tokens[0])
        assert p["score"] == pytest.approx(decoded.scores[0], abs=1e-4)


def test_evaluate_bad_arguments(setup, tmp_path, capsys):
    root, model_dir = setup
    assert main(["evaluate", "--data", str(tmp_path / "nope"), "--model", str(model_dir)]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(root), "--model", str(tmp_path / "nomodel")]) == 2
    assert "nomodel" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(root), "--beam", "0"]) == 2


def test_cider_stderr_matches_cider_d_written_out_by_hand():
    references = {
        "a": ["a dog runs on the grass .", "a brown dog runs ."],
        "b": ["a cat sits on a red mat .", "the cat is on the mat"],
        "c": ["two men ride bikes .", "people ride bicycles down a road"],
        "d": ["a girl in a red coat .", "a child wearing red"],
    }
    captions = {"a": "a dog runs", "b": "a cat on the mat", "c": "a dog runs", "d": "a girl in red"}
    ids = list(references)
    per_image = brute_force_cider_d(
        [[ptb_tokenize(c) for c in references[i]] for i in ids],
        [ptb_tokenize(captions[i]) for i in ids],
    )
    assert min(per_image) == 0.0 and max(per_image) > 1.0  # a real spread to measure
    expected = np.std(per_image, ddof=1) / np.sqrt(len(ids))
    assert cider_stderr(references, captions) == pytest.approx(expected, rel=1e-9)
    assert cider_stderr({"a": references["a"]}, {"a": captions["a"]}) is None
