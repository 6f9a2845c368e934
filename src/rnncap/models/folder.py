"""Save and load a captioning model as plain files: config.json + vocab.json + model.safetensors.

No pickled classes: the config is JSON, the vocabulary is JSON, the weights are safetensors. The
encoder is not stored; it is rebuilt by name from its own pretrained weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from rnncap.data.vocab import Vocabulary
from rnncap.models.captioner import CaptionerConfig, CaptioningRNN
from rnncap.utils.config import ConfigError
from rnncap.utils.errors import ModelError
from rnncap.utils.io import (
    MAX_CONFIG_BYTES,
    InvalidFileError,
    atomic_write,
    first_line,
    read_json_file,
)

CONFIG, VOCAB, WEIGHTS = "config.json", "vocab.json", "model.safetensors"


class ModelNotFoundError(ModelError, FileNotFoundError):
    """No model at the path or name given (a FileNotFoundError too)."""


class IncompatibleModelError(ModelError, ValueError):
    """A model that does not fit what it is used with: other features, another vocabulary,
    another model's shape; the message names the model."""

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "default"


def save_model(
    folder: str | Path,
    model: CaptioningRNN,
    vocab: Vocabulary,
    dtype: torch.dtype | None = None,
    extra: dict | None = None,
    files: dict | None = None,
    decoding: dict | None = None,
) -> Path:
    """Write the model folder atomically (a temporary folder renamed into place).

    dtype: store the weights in this dtype (e.g. torch.float16 for the bundled model).
    extra: plain data merged into config.json under "info" (training flags, scores...).
    files: name -> writer(path) for more files that must land together with the weights
    (the training state of a resumable checkpoint).
    decoding: the model's own decoding settings (`DecodeOptions` as a dict), config.json
    "decoding": what `rnncap.load` and every command use when no flag overrides them.
    """
    def write(tmp: Path) -> None:
        state = {
            k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach())
            .cpu()
            .contiguous()
            for k, v in model.state_dict().items()
        }
        (tmp / WEIGHTS).write_bytes(save(state))  # a full disk is an OSError naming the errno
        config = {"captioner": model.config.to_dict(), "info": extra or {}}
        if decoding:
            config["decoding"] = decoding
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        vocab.save(tmp / VOCAB)
        for name, write_file in (files or {}).items():
            write_file(tmp / name)

    return atomic_write(folder, write, folder=True)


def resolve_model_dir(spec: str | Path) -> Path:
    """'default' | a model folder | a run folder (its best/ model) | a model.safetensors file."""
    if str(spec) == "default":
        path = DEFAULT_MODEL
        if not (path / WEIGHTS).is_file():
            raise ModelNotFoundError(f"the bundled default model is missing from {path}")
        return path
    path = Path(spec)
    if path.is_file() and path.name.endswith(".safetensors"):
        path = path.parent
    for candidate in (path, path / "best", path / "last"):
        if (candidate / WEIGHTS).is_file() and (candidate / CONFIG).is_file():
            return candidate
    if not path.exists():
        raise ModelNotFoundError(f"model {spec}: no such file or folder")
    raise ModelNotFoundError(f"model {spec}: no {CONFIG} + {WEIGHTS} found (nor in best/ or last/)")


def read_config(folder: str | Path) -> dict:
    """config.json as a dict; InvalidFileError when it is not a JSON object."""
    path = Path(folder) / CONFIG
    try:
        data = read_json_file(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise InvalidFileError(path, "no such file") from None
    if not isinstance(data, dict):
        raise InvalidFileError(path, "expected a JSON object")
    return data


def read_captioner_config(folder: str | Path) -> CaptionerConfig:
    """The CaptionerConfig of a model folder, validated (types, ranges, ids in the vocabulary)."""
    path = Path(folder) / CONFIG
    config = read_config(folder)
    section = config.get("captioner")
    if config.get("kind") == "show_tell":  # rnncap.models.showtell_folder
        raise InvalidFileError(path, "a Show-and-Tell model: it captions (rnncap.load), no more")
    if section is None:
        raise InvalidFileError(path, "no 'captioner' section (not an rnncap model config)")
    try:
        config = CaptionerConfig.from_dict(section)
    except ConfigError as error:
        raise InvalidFileError(path, error.reason, field=f"captioner.{error.field}") from None
    return config


def read_vocabulary(folder: str | Path, config: CaptionerConfig) -> Vocabulary:
    """vocab.json, checked against the config's vocab_size and special ids."""
    path = Path(folder) / VOCAB
    vocab = Vocabulary.load(path)
    if len(vocab) != config.vocab_size:
        raise InvalidFileError(
            path, f"{len(vocab)} words, but {CONFIG} says vocab_size {config.vocab_size}"
        )
    for name in ("pad_id", "start_id", "end_id", "unk_id"):
        if getattr(config, name) != getattr(vocab, name):
            raise InvalidFileError(
                Path(folder) / CONFIG,
                f"{getattr(config, name)}, but the vocabulary's id is {getattr(vocab, name)}",
                field=f"captioner.{name}",
            )
    return vocab


def read_weights(folder: str | Path, config, build=CaptioningRNN) -> dict[str, torch.Tensor]:
    """model.safetensors as float32 tensors, after checking its names and shapes against the
    model `build(config)` (read from the file's header: nothing is allocated before)."""
    path = Path(folder) / WEIGHTS
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build(config).state_dict().items()}
    try:
        with safe_open(str(path), framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (OSError, SafetensorError) as error:
        raise InvalidFileError(
            path, f"truncated or not a safetensors file ({first_line(error)})"
        ) from None
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        problem = f"missing tensor {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise InvalidFileError(
            path, f"{problem}: the weights do not belong to the model {CONFIG} describes"
        )
    for name, shape in expected.items():
        if found[name] != shape:
            raise InvalidFileError(
                path,
                f"tensor {name!r} has shape {list(found[name])}, {CONFIG} implies {list(shape)}",
            )
    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise InvalidFileError(path, f"cannot read the weights ({first_line(error)})") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_model(spec: str | Path = "default", device: str | torch.device = "cpu"):
    """Rebuild a saved model in eval mode -> (model, vocab). Weights load strictly, as float32.

    Raises FileNotFoundError when there is no model at `spec`, and InvalidFileError (one line
    naming the file, and the field for config.json) when one of its files cannot be used.
    """
    folder = resolve_model_dir(spec)
    config = read_captioner_config(folder)
    vocab = read_vocabulary(folder, config)
    state = read_weights(folder, config)
    model = CaptioningRNN(config)
    model.load_state_dict(state, strict=True)
    model.origin = folder  # an unknown encoder is reported, naming config.json, when first needed
    return model.to(device).eval(), vocab
