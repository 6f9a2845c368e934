"""Damaged or ill-typed model folders, configs and checkpoints: every command answers with one line
naming the file (and the field), exit code 2, no traceback, and writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rnncap.cli import main
from rnncap.decode.beam import DecodeOptions
from rnncap.engine.train import train
from rnncap.engine.train_config import TrainConfig
from rnncap.models.captioning_rnn import CaptionerConfig
from rnncap.models.folder import load_model
from rnncap.utils.config import ConfigError
from rnncap.utils.io import InvalidFileError
from support.inference import example_images, make_tiny_model
from support.tinydata import make_dataset


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def tiny8k(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny8k"))


def _variant(good: Path, folder: Path, edit) -> Path:
    shutil.copytree(good, folder)
    edit(folder)
    return folder


def _config(**changes):
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        for key, value in changes.items():
            section, _, field = key.rpartition(".")
            config.setdefault(section or "captioner", {})[field] = value
        (folder / "config.json").write_text(json.dumps(config))

    return edit


def _truncate(name: str, keep: float = 0.5):
    def edit(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: int(len(data) * keep)])

    return edit


def _write(name: str, data: bytes):
    return lambda folder: (folder / name).write_bytes(data)


# folder edit -> (file named in the message, the rest of the one-line message)
CASES = {
    "truncated weights": (
        _truncate("model.safetensors"),
        "model.safetensors",
        "truncated or not a safetensors file",
    ),
    "hidden_dim as a string": (
        _config(hidden_dim="512"),
        "config.json",
        "captioner.hidden_dim: expected an integer, got '512' (a string)",
    ),
    "unknown encoder": (
        _config(encoder="vgg99"),
        "config.json",
        "captioner.encoder: unknown encoder 'vgg99'; known encoders: efficientnet_lite0",
    ),
    "no captioner section": (
        _write("config.json", b'{"info": {}}'),
        "config.json",
        "no 'captioner' section",
    ),
    "hidden_dim of 10**9": (
        _config(hidden_dim=10**9),
        "config.json",
        "captioner.hidden_dim: must be between 1 and 8,192, got 1,000,000,000",
    ),
    "max_length 0": (
        _config(max_length=0),
        "config.json",
        "captioner.max_length: must be between 1 and 1,000, got 0",
    ),
    "end_id outside the vocabulary": (
        _config(end_id=5000),
        "config.json",
        "captioner.end_id: 5000 is outside the vocabulary",
    ),
    "end_id not the vocabulary's": (
        _config(end_id=7),
        "config.json",
        "captioner.end_id: 7, but the vocabulary's id is 2",
    ),
    "weights of another size": (
        _config(hidden_dim=64),
        "model.safetensors",
        "tensor 'feature_proj.weight' has shape [32, 1280], config.json implies [64, 1280]",
    ),
    "config not JSON": (
        _truncate("config.json", 0.3),
        "config.json",
        "not a readable JSON file",
    ),
    "vocabulary not UTF-8": (
        _write("vocab.json", b'\xff{"tokens": []}'),
        "vocab.json",
        "not a readable JSON file",
    ),
    "vocabulary of another size": (
        _write(
            "vocab.json", json.dumps({"tokens": ["<pad>", "<start>", "<end>", "<unk>"]}).encode()
        ),
        "vocab.json",
        "4 words, but config.json says vocab_size",
    ),
    "config nested 100,000 deep": (
        _write("config.json", b"[" * 100_000),
        "config.json",
        "not a readable JSON file (nested too deeply)",
    ),
    "vocabulary nested 100,000 deep": (
        _write("vocab.json", b'{"tokens": ' + b"[" * 100_000),
        "vocab.json",
        "not a readable JSON file (nested too deeply)",
    ),
    "an integer of 5,000 digits": (
        _write("config.json", b'{"captioner": {"hidden_dim": ' + b"9" * 5000 + b"}}"),
        "config.json",
        "not a readable JSON file (Exceeds the limit",
    ),
    "decoding guidance of 1e308": (
        _config(**{"decoding.guidance": 1e308}),
        "config.json",
        "decoding.guidance: must be between 0 and 100, got 1e+308",
    ),
    "decoding length_penalty of a million": (
        _config(**{"decoding.length_penalty": 1e6}),
        "config.json",
        "decoding.length_penalty: must be between 0 and 10, got 1e+06",
    ),
    "decoding no_repeat_ngram of a million": (
        _config(**{"decoding.no_repeat_ngram": 10**6}),
        "config.json",
        "decoding.no_repeat_ngram: must be between 0 and 1,000, got 1,000,000",
    ),
    "decoding beam of a million": (
        _config(**{"decoding.beam_size": 10**6}),
        "config.json",
        "decoding.beam_size: must be between 1 and 100",
    ),
}


ON_USE = {"unknown encoder"}  # found when the encoder is first needed (not for features only)


@pytest.mark.parametrize("case", sorted(set(CASES) - ON_USE))
def test_load_names_the_file_and_field(good_model, tmp_path, case):
    edit, file, message = CASES[case]
    folder = _variant(good_model, tmp_path / "bad", edit)
    with pytest.raises(InvalidFileError) as raised:
        from rnncap.decode.captioner import load

        load(folder, device="cpu")
    assert str(raised.value) == f"{folder / file}: {message}" or str(raised.value).startswith(
        f"{folder / file}: {message}"
    )
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("command", ["caption", "serve", "evaluate"])
@pytest.mark.parametrize(
    "case", ["truncated weights", "hidden_dim as a string", "max_length 0", "unknown encoder"]
)
def test_commands_print_one_line_and_exit_2(good_model, tiny8k, tmp_path, capsys, command, case):
    edit, file, message = CASES[case]
    folder = _variant(good_model, tmp_path / "bad", edit)
    argv = {
        "caption": ["caption", "--model", str(folder), str(example_images()[0])],
        "serve": ["serve", "--model", str(folder), "--port", "0", "--device", "cpu"],
        "evaluate": [
            "evaluate",
            "--model",
            str(folder),
            "--data",
            str(tiny8k),
            "--split",
            "dev",
            "--quiet",
        ],
    }[command]
    assert main(argv) == 2
    captured = capsys.readouterr()
    summary = "flickr8k dev: loaded"  # evaluate reads the data set before it needs the encoder
    lines = [line for line in captured.err.strip().splitlines() if not line.startswith(summary)]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("rnncap: error: ") and f"{folder / file}: {message}" in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


SPECIAL_FILE = """
import sys
from rnncap.data.vocab import Vocabulary
from rnncap.utils.io import InvalidFileError
try:
    Vocabulary.load(sys.argv[1])
except InvalidFileError as error:
    print(error)
"""


def _limited_memory():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # reading /dev/zero stops here


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_special_files_are_refused_unread(tmp_path, special):
    import os
    import subprocess
    import sys

    path = tmp_path / "vocab.json"
    if special == "fifo":
        os.mkfifo(path)  # opening it for reading would wait for a writer forever
    else:
        os.symlink(special, path)
    done = subprocess.run(
        [sys.executable, "-c", SPECIAL_FILE, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limited_memory,
    )
    assert done.returncode == 0, done.stderr
    expected = f"{path}: not a regular file (a device, FIFO, socket or folder)\n"
    assert done.stdout == expected


def test_train_on_a_fifo_is_one_line_and_leaves_no_run_folder(tiny8k, tmp_path):
    import os
    import subprocess
    import sys

    data = tmp_path / "data"
    shutil.copytree(tiny8k, data)
    (data / "captions.txt").unlink()
    os.mkfifo(data / "captions.txt")
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "rnncap.cli", "train", "--data", str(data), "--features"]
    argv += [str(data / "cache"), "--encoder", "fake", "--out", str(out), "--device", "cpu"]
    done = subprocess.run(argv + ["--no-progress"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"rnncap: error: {data / 'captions.txt'}: not a regular file (a device, FIFO, socket "
        "or folder)\n"
    )
    assert not out.exists()


def test_the_largest_decoding_settings_still_give_captions(good_model, tmp_path):
    import math

    from rnncap.decode.captioner import load

    settings = {"guidance": 100.0, "length_penalty": 10.0, "no_repeat_ngram": 1000}
    edit = _config(**{f"decoding.{k}": v for k, v in settings.items()})
    captioner = load(_variant(good_model, tmp_path / "edge", edit), device="cpu")
    captions = captioner([str(p) for p in example_images()])
    assert all(c.text and math.isfinite(c.score) for c in captions), captions


def test_config_validation_in_the_dataclass():
    ok = CaptionerConfig(vocab_size=10)
    assert ok.num_parameters() > 0
    with pytest.raises(ConfigError, match="^dropout: must be in"):
        CaptionerConfig(vocab_size=10, dropout=1.5)
    with pytest.raises(ConfigError, match="^deep_output: expected true or false, got 1"):
        CaptionerConfig(vocab_size=10, deep_output=1)
    with pytest.raises(ConfigError, match="the special ids must differ"):
        CaptionerConfig(vocab_size=10, end_id=1)
    with pytest.raises(ConfigError, match="500,000,000 allowed"):
        CaptionerConfig(vocab_size=400_000, hidden_dim=8192, wordvec_dim=8192)
    with pytest.raises(ConfigError, match="^beam_size: expected an integer"):
        DecodeOptions.from_dict({"beam_size": 2.5})


# ------------------------------------------------------------------------ training runs
def _train_cfg(root: Path, out: Path, **changes) -> TrainConfig:
    base = dict(
        data=str(root),
        features=str(root / "cache"),
        encoder="fake",
        out=str(out),
        cell_type="lstm",
        wordvec_dim=8,
        hidden_dim=16,
        min_count=1,
        epochs=1,
        batch_images=4,
        eval_images=0,
        progress=False,
        device="cpu",
    )
    return TrainConfig(**{**base, **changes})


def _train_argv(cfg: TrainConfig, *extra: str) -> list[str]:
    argv = ["train", "--data", cfg.data, "--features", cfg.features, "--encoder", cfg.encoder]
    argv += ["--out", cfg.out, "--cell-type", cfg.cell_type, "--wordvec-dim", "8"]
    argv += ["--min-count", "1", "--epochs", "2", "--batch-images", "4", "--eval-images", "0"]
    return argv + ["--no-progress", "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("tiny8k"))
    out = root / "run"
    train(_train_cfg(root, out))
    return root, out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_resume_with_another_hidden_dim_is_refused_before_anything(run_folder, tmp_path, capsys):
    root, out = run_folder
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    before = _snapshot(copy)
    cfg = _train_cfg(root, copy)
    assert main(_train_argv(cfg, "--hidden-dim", "32", "--resume")) == 2
    line = _one_line_error(capsys)
    assert line == (
        f"rnncap: error: --resume: {copy} was trained with --hidden-dim 16, not 32 (repeat the "
        f"run's options, e.g. --config {copy}/config.json, or start a new run with another --out)"
    )
    assert _snapshot(copy) == before


@pytest.mark.parametrize(
    "damage, message",
    [
        (_truncate("train_state.pt"), "train_state.pt: truncated or not a training state"),
        (_truncate("model.safetensors"), "model.safetensors: truncated or not a safetensors"),
        (_config(hidden_dim="16"), "config.json: captioner.hidden_dim: expected an integer"),
    ],
)
def test_resume_from_a_damaged_checkpoint(run_folder, tmp_path, capsys, damage, message):
    root, out = run_folder
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    damage(copy / "last")
    before = _snapshot(copy)
    assert main(_train_argv(_train_cfg(root, copy), "--hidden-dim", "16", "--resume")) == 2
    line = _one_line_error(capsys)
    assert line.startswith(f"rnncap: error: {copy / 'last'}/{message}"), line
    assert _snapshot(copy) == before


def test_ill_typed_option_in_a_config_file(run_folder, tmp_path, capsys):
    root, _ = run_folder
    config = tmp_path / "options.json"
    config.write_text(json.dumps({"hidden_dim": "512"}))
    argv = ["train", "--config", str(config), "--data", str(root), "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert line == (
        f"rnncap: error: --config {config}: hidden_dim: expected an integer, got '512' (a string)"
    )
    assert not (tmp_path / "r").exists()


def test_a_good_model_still_loads(good_model):
    model, vocab = load_model(good_model)
    assert model.config.vocab_size == len(vocab)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_language_model_folder_damaged(tmp_path, capsys):
    from rnncap.data.vocab import Vocabulary
    from rnncap.engine import lm_train
    from rnncap.models.lm import LanguageModel, LMConfig

    vocab = Vocabulary(["a", "dog"])
    config = lm_train.LMTrainConfig(
        model=LMConfig(vocab_size=len(vocab), embed_dim=4, hidden_dim=5)
    )
    out = tmp_path / "lm"
    lm_train.save(LanguageModel(config.model), vocab, config, lm_train.History(), out)
    assert main(["lm", "--load", str(out), "--sample", "1"]) == 0
    capsys.readouterr()
    data = json.loads((out / "config.json").read_text())
    data["model"]["hidden_dim"] = -5
    (out / "config.json").write_text(json.dumps(data))
    assert main(["lm", "--load", str(out), "--sample", "1"]) == 2
    assert _one_line_error(capsys) == (
        f"rnncap: error: {out / 'config.json'}: model.hidden_dim: must be between 1 and 8,192, "
        "got -5"
    )
    data["model"]["hidden_dim"] = 5
    (out / "config.json").write_text(json.dumps(data))
    _truncate("model.safetensors")(out)
    assert main(["lm", "--load", str(out), "--sample", "1"]) == 2
    assert "model.safetensors: truncated or not a safetensors file" in _one_line_error(capsys)
