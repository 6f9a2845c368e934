"""Training needs no Java (dev CIDEr-D is computed in-process); evaluation, which does need it
for METEOR and the PTB tokenizer, says so before doing any work."""

from __future__ import annotations

import pytest

import rnncap.engine.metrics as metrics
from rnncap.engine.evaluate import EvalConfig, evaluate
from rnncap.engine.train import train
from rnncap.engine.train_config import TrainConfig
from support.tinydata import make_dataset


@pytest.fixture
def no_java(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)


def test_training_runs_without_java(tmp_path, no_java):
    root = make_dataset(tmp_path / "data")
    cfg = TrainConfig(
        data=str(root),
        features=str(root / "cache"),
        encoder="fake",
        out=str(tmp_path / "run"),
        wordvec_dim=8,
        hidden_dim=16,
        min_count=1,
        epochs=1,
        batch_images=4,
        eval_images=0,
        progress=False,
        device="cpu",
    )
    best = train(cfg)
    assert best["epoch"] == 1 and 0.0 <= best["dev_cider"] <= 10.0


def test_evaluate_without_java_fails_before_any_work(tmp_path, no_java, monkeypatch):
    import rnncap.decode.captioner as captioner

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the Java check")

    monkeypatch.setattr(captioner, "load", must_not_load)
    with pytest.raises(metrics.MetricsError, match="java not found"):
        evaluate(EvalConfig(model="default", data=str(tmp_path), split="test"))
