"""`rnncap caption --out/--resume/--shard` in real processes: two shards run side by side and a
run killed with SIGKILL then resumed give, together, the lines of one uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnncap.cli import main
from support.inference import REPO, example_images

IMAGES = 30


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """IMAGES photos in a folder: the samples copied under numbered names."""
    folder = tmp_path_factory.mktemp("photos")
    samples = example_images()
    for k in range(IMAGES):
        source = samples[k % len(samples)]
        shutil.copy(source, folder / f"{k:02d}_{source.name}")
    return folder


def _command(model_dir: Path, photos: Path, *flags: str) -> list[str]:
    # one image per batch: every caption and score is computed alone, the same in every process
    return [
        sys.executable,
        "-m",
        "rnncap.cli",
        "caption",
        str(photos),
        "--model",
        str(model_dir),
        "--device",
        "cpu",
        "--backend",
        "torch",
        "--batch-size",
        "1",
        "--workers",
        "0",
        *flags,
    ]


def _env() -> dict:
    path = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1")


def _run(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _kill_after(command: list[str], out: Path, lines: int) -> None:
    """Start `command`, SIGKILL it once `out` holds `lines` lines."""
    process = subprocess.Popen(command, stderr=subprocess.PIPE, env=_env())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if out.is_file() and out.read_bytes().count(b"\n") >= lines:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"


@pytest.mark.slow
def test_shards_and_a_killed_run_resumed_equal_one_run(model_dir, photos, tmp_path):
    whole = tmp_path / "whole.jsonl"
    _run(_command(model_dir, photos, "--out", str(whole)))
    expected = _lines(whole)
    assert len(expected) == IMAGES
    assert [json.loads(line)["image"] for line in expected] == sorted(map(str, photos.iterdir()))

    shards = [tmp_path / f"shard{i}.jsonl" for i in range(2)]
    pattern = str(tmp_path / "shard{shard}.jsonl")  # each process fills in its number
    running = [
        subprocess.Popen(
            _command(model_dir, photos, "--shard", f"{i}/2", "--out", pattern),
            stderr=subprocess.PIPE,
            env=_env(),
        )
        for i in range(2)
    ]
    for process in running:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()
    parts = [_lines(out) for out in shards]
    assert sorted(parts[0] + parts[1]) == sorted(expected)
    assert abs(len(parts[0]) - len(parts[1])) <= 1

    killed = tmp_path / "killed.jsonl"
    command = _command(model_dir, photos, "--out", str(killed))
    _kill_after(command, killed, lines=3)
    finished = len(_lines(killed))
    assert 3 <= finished < IMAGES
    with open(killed, "ab") as f:  # what a kill in the middle of a write leaves
        f.write(b'{"image": "' + str(photos).encode())
    resumed = _run([*command, "--resume"])
    assert f"{IMAGES - finished} captioned, {finished} already in" in resumed.stderr
    assert "torn last line" in resumed.stderr
    assert _lines(killed) == expected  # line for line, in the same order


def test_resume_refuses_other_settings(model_dir, photos, tmp_path, capsys):
    out = tmp_path / "captions.jsonl"
    out.write_text(json.dumps({"image": "x.jpg", "caption": "a cat", "score": -1.0}) + "\n")
    base = ["caption", str(photos), "--model", str(model_dir), "--device", "cpu"]
    cases = [
        ([*base, "--out", str(out)], "--resume"),  # an existing file is not overwritten
        ([*base, "--resume"], "--resume needs --out"),
        ([*base, "--shard", "2/2"], "--shard 2/2"),
        ([*base, "--out", str(tmp_path / "c{shard}.jsonl")], "needs --shard"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2
        out_text, err = capsys.readouterr()
        assert out_text == "" and len(err.strip().splitlines()) == 1 and needle in err, err
    out.with_name(out.name + ".settings.json").write_text(
        json.dumps({"model": str(model_dir), "beam": None, "max_length": None, "shard": None})
    )
    assert main([*base, "--out", str(out), "--resume", "--beam", "5"]) == 2
    _, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "beam None now 5" in err, err
    assert _lines(out) == [json.dumps({"image": "x.jpg", "caption": "a cat", "score": -1.0})]
