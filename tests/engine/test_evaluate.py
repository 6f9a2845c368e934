"""`rnncap evaluate` on a tiny data set: captions match a direct encoder + beam search path."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from rnncap.cli import main
from rnncap.data.vocab import Vocabulary
from rnncap.decode.beam import beam_search
from rnncap.engine.metrics import METRICS
from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN
from rnncap.models.folder import load_model, save_model
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
