"""Configs check themselves (TrainConfig, EvalConfig, ServeConfig): the Python API and the
command line refuse the same values with the same reason (the command line naming the flag, in
one line, exit code 2)."""

from __future__ import annotations

import json

import pytest

from rnncap.cli import main
from rnncap.engine.evaluate import EvalConfig
from rnncap.engine.train_config import TrainConfig
from rnncap.utils.config import ConfigError

TRAIN_CASES = [  # values, the field refused, the flags saying the same
    ({"objective": "rl"}, "objective", ["--objective", "rl"]),
    ({"mirror": 1.5}, "mirror", ["--mirror", "1.5"]),
    ({"samples_per_image": 1}, "samples_per_image", ["--samples-per-image", "1"]),
    ({"objective": "scst"}, "init", ["--objective", "scst"]),
    ({"cell_type": "gru"}, "cell_type", ["--cell-type", "gru"]),
    ({"extra_data": "flickr8k"}, "extra_data", ["--extra-data", "flickr8k"]),
    ({"epochs": 0}, "epochs", ["--epochs", "0"]),
]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


@pytest.mark.parametrize(("values", "field", "argv"), TRAIN_CASES)
def test_train_config_and_the_train_command_refuse_alike(tmp_path, capsys, values, field, argv):
    with pytest.raises(ConfigError) as caught:
        TrainConfig(data=str(tmp_path), **values)
    assert caught.value.field == field
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), *argv]) == 2
    flag = "--" + field.replace("_", "-")
    assert _one_line_error(capsys) == f"rnncap: error: {flag}: {caught.value.reason}"
    assert not (tmp_path / "run").exists()  # refused before any work


def test_a_bad_value_in_the_config_file_names_the_file_and_the_field(tmp_path, capsys):
    config = tmp_path / "options.json"
    config.write_text(json.dumps({"train": {"mirror": 2}}))
    with pytest.raises(ConfigError) as caught:
        TrainConfig(mirror=2)
    assert main(["train", "--data", str(tmp_path), "--config", str(config)]) == 2
    expected = f"rnncap: error: --config {config}: mirror: {caught.value.reason}"
    assert _one_line_error(capsys) == expected


def test_objectives_are_the_registered_ones():
    from rnncap.engine.objectives import OBJECTIVES

    for name in OBJECTIVES:
        kw = {"init": "some/run"} if name == "scst" else {}
        assert TrainConfig(objective=name, **kw).objective == name


EVAL_CASES = [
    ({"beam": 0}, "beam", ["--beam", "0"]),
    ({"length_penalty": -1.0}, "length_penalty", ["--length-penalty", "-1"]),
    ({"batch_size": 0}, "batch_size", ["--batch-size", "0"]),
]


@pytest.mark.parametrize(("values", "field", "argv"), EVAL_CASES)
def test_eval_config_and_the_evaluate_command_refuse_alike(tmp_path, capsys, values, field, argv):
    with pytest.raises(ConfigError) as caught:
        EvalConfig(data=str(tmp_path), **values)
    assert caught.value.field == field
    assert main(["evaluate", "--data", str(tmp_path), *argv]) == 2
    flag = "--" + field.replace("_", "-")
    assert _one_line_error(capsys) == f"rnncap: error: {flag}: {caught.value.reason}"


SERVE_CASES = [
    ({"beam_size": 0}, "beam_size", ["--beam", "0"], "--beam"),
    ({"max_batch": 0}, "max_batch", ["--max-batch", "0"], "--max-batch"),
    ({"timeout": 0.0}, "timeout", ["--timeout", "0"], "--timeout"),
    ({"max_wait_ms": -1.0}, "max_wait_ms", ["--max-wait-ms", "-1"], "--max-wait-ms"),
]


@pytest.mark.parametrize(("values", "field", "argv", "flag"), SERVE_CASES)
def test_serve_config_and_the_serve_command_refuse_alike(capsys, values, field, argv, flag):
    from rnncap.serving.app import ServeConfig

    with pytest.raises(ConfigError) as caught:
        ServeConfig(**values)
    assert caught.value.field == field
    assert main(["serve", "--device", "cpu", *argv]) == 2  # refused before loading a model
    assert _one_line_error(capsys) == f"rnncap: error: {flag}: {caught.value.reason}"
