"""Weight averaging of model folders, and the bundling script that writes the average."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from rnncap.data.vocab import Vocabulary
from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN
from rnncap.models.folder import CONFIG, WEIGHTS, save_model
from rnncap.models.soup import average_models

ROOT = Path(__file__).resolve().parents[2]
CAPTIONS = ["a dog runs on the grass", "a cat sleeps on a red sofa", "two men ride bikes"]


def saved(folder, seed: int, hidden: int = 10, captions=CAPTIONS, info=None) -> Path:
    torch.manual_seed(seed)
    vocab = Vocabulary.build(captions, min_count=1)
    config = CaptionerConfig(
        encoder="none",
        feature_dim=8,
        cell_type="attn",
        wordvec_dim=6,
        hidden_dim=hidden,
        vocab_size=len(vocab),
        max_length=6,
    )
    return save_model(folder, CaptioningRNN(config), vocab, extra=info or {"seed": seed})


def test_average_is_the_mean_of_each_weight(tmp_path):
    folders = [saved(tmp_path / f"m{seed}", seed) for seed in (0, 1, 2)]
    model, vocab, used = average_models(folders)
    files = [load_file(str(folder / WEIGHTS)) for folder in folders]  # NumPy, not torch
    state = model.state_dict()
    assert set(state) == set(files[0])
    for name, weight in state.items():
        mean = np.mean([f[name].astype(np.float64) for f in files], axis=0)
        np.testing.assert_allclose(weight.numpy(), mean, rtol=1e-6, atol=1e-7)
    assert not np.allclose(files[0]["vocab_proj.weight"], files[1]["vocab_proj.weight"])
    assert used == folders and len(vocab) == model.config.vocab_size and not model.training


def test_one_model_is_itself(tmp_path):
    folder = saved(tmp_path / "m", 3)
    model, _, _ = average_models([folder])
    for name, weight in load_file(str(folder / WEIGHTS)).items():
        np.testing.assert_array_equal(model.state_dict()[name].numpy(), weight)


def test_different_models_are_refused(tmp_path):
    a = saved(tmp_path / "a", 0)
    wider = saved(tmp_path / "wider", 1, hidden=12)
    with pytest.raises(ValueError, match=r"wider: captioner hidden_dim is 12.*has 10"):
        average_models([a, wider])
    other_words = saved(tmp_path / "words", 1, captions=[c.replace("dog", "fox") for c in CAPTIONS])
    with pytest.raises(ValueError, match="words: its vocabulary differs"):
        average_models([a, other_words])
    with pytest.raises(ValueError, match="no model to average"):
        average_models([])


def test_bundle_script_writes_the_float16_average_with_both_records(tmp_path):
    """Without encoder.onnx (its writing: tests/models/test_encoder_export.py)."""
    a, b = saved(tmp_path / "a", 0, info={"run": "a"}), saved(tmp_path / "b", 1, info={"run": "b"})
    out = tmp_path / "bundle"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bundle_model.py"),
            str(a),
            str(b),
            str(out),
            "--decoding",
            '{"beam_size": 5}',
            "--no-encoder",
            "--weights",
            "float16",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "the mean of 2 models' weights" in done.stdout
    written = load_file(str(out / WEIGHTS))
    first, second = load_file(str(a / WEIGHTS)), load_file(str(b / WEIGHTS))
    for name, weight in written.items():
        assert weight.dtype == np.float16
        mean = (first[name].astype(np.float64) + second[name]) / 2
        # averaged in float64, held as float32 by the model, stored as float16
        np.testing.assert_array_equal(weight, mean.astype(np.float32).astype(np.float16))
    config = json.loads((out / CONFIG).read_text())
    assert config["info"] == {"averaged": [{"run": "a"}, {"run": "b"}]}
    assert config["decoding"]["beam_size"] == 5
    assert not (out / "encoder.onnx").exists()
