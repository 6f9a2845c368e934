"""Training on a tiny synthetic Flickr8k-format data set with cached features: resume and DDP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rnncap.engine.train import train
from rnncap.engine.train_config import TrainConfig
from rnncap.models.captioning_rnn import list_cell_types
from support.tinydata import WORDS, make_dataset, tiny_train_config, train_killed_after_first_epoch


def config(root: Path, out: Path, **kw) -> TrainConfig:
    return tiny_train_config(root, out, **kw)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("tiny8k"))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("cell_type", list_cell_types())
def test_training_lowers_loss_and_writes_a_run(dataset, tmp_path, cell_type):
    out = tmp_path / "run"
    best = train(
        config(dataset, out, cell_type=cell_type, epochs=6, batch_images=2, lr=5e-2, patience=10)
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[-1]["train_loss"] < 0.7 * records[0]["train_loss"]
    assert 1 <= best["epoch"] <= 6 and (out / "best" / "model.safetensors").is_file()
    assert (out / "curves.png").stat().st_size > 1000
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["train"]["cell_type"] == cell_type
    assert resolved["captioner"]["feature_dim"] == len(WORDS)


def test_resume_continues_exactly(dataset, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(config(dataset, straight, epochs=2))
    killed = tmp_path / "killed"
    train_killed_after_first_epoch(config(dataset, killed, epochs=2), monkeypatch)
    with pytest.raises(FileExistsError, match="--resume"):
        train(config(dataset, killed, epochs=2))
    train(config(dataset, killed, epochs=2, resume=True))
    a, b = weights(straight / "last"), weights(killed / "last")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def _epochs(run: Path) -> list[int]:
    return [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_after_a_swap_killed_between_its_renames(dataset, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(config(dataset, straight, epochs=3))
    # The state a kill between the renames of epoch 2's last/ leaves: no last/, epoch 1 as
    # .last.old, epoch 2 complete in the temporary folder, metrics.jsonl not yet appended.
    one, run = tmp_path / "one", tmp_path / "run"
    train_killed_after_first_epoch(config(dataset, one, epochs=3), monkeypatch)
    train_killed_after_first_epoch(config(dataset, run, epochs=3), monkeypatch, epochs=2)
    os.replace(run / "last", run / ".last.k2x9q0ab")
    shutil.copytree(one / "last", run / ".last.old")
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(config(dataset, run, epochs=3))  # no fresh run over the checkpoints
    assert _epochs(run) == [1]
    train(config(dataset, run, epochs=3, resume=True))  # from epoch 2, the newest complete
    a, b = weights(straight / "last"), weights(run / "last")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert _epochs(run) == [1, 2, 3]
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_resume_with_a_leftover_old_copy(dataset, tmp_path, monkeypatch):
    straight, run = tmp_path / "straight", tmp_path / "run"
    train(config(dataset, straight, epochs=2))
    train_killed_after_first_epoch(config(dataset, run, epochs=2), monkeypatch)
    shutil.copytree(run / "last", run / ".last.old")  # killed before the old copy was removed
    shutil.copytree(run / "best", run / ".best.old")
    train(config(dataset, run, epochs=2, resume=True))
    a, b = weights(straight / "last"), weights(run / "last")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert _epochs(run) == [1, 2]
    assert not (run / ".last.old").exists() and not (run / ".best.old").exists()


def test_dry_run_runs_one_batch(dataset, tmp_path):
    best = train(config(dataset, tmp_path / "dry", dry_run=True, epochs=5))
    assert best["epoch"] == 1
    assert len((tmp_path / "dry" / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built")
def test_ddp_two_processes_match_one_process_with_the_global_batch(dataset, tmp_path):
    """2 gloo processes x 2 images a step == 1 process x 4 images a step (gradients averaged)."""
    single = tmp_path / "single"
    train(config(dataset, single, epochs=1, batch_images=4, cell_type="lstm"))
    ddp = tmp_path / "ddp"
    args = json.dumps(config(dataset, ddp, epochs=1, batch_images=2, cell_type="lstm").__dict__)
    code = (
        "import json, sys\n"
        "from rnncap.engine.train import train\n"
        "from rnncap.engine.train_config import TrainConfig\n"
        "train(TrainConfig(**json.loads(sys.argv[1])))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "--no-python",
        sys.executable,
        "-c",
        code,
        args,
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = weights(single / "last"), weights(ddp / "last")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    shutil.rmtree(ddp)


def test_train_command_rejects_bad_arguments(tmp_path, capsys):
    from rnncap.cli import main

    assert main(["train"]) == 2
    assert "--data is required" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "missing")]) == 2
    assert "missing: no such folder" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"epochs": 3, "colour": "red"}')
    assert main(["train", "--config", str(bad), "--data", str(tmp_path)]) == 2
    assert "colour" in capsys.readouterr().err
