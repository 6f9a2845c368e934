"""A model folder's plain files, read and checked without torch: where the folder is,
config.json, the captioner config and the vocabulary, and the weights' names and shapes.

`rnncap.models.folder` (torch) and `rnncap.models.numpy_decoder` (NumPy) both read through here.
"""

from __future__ import annotations

from pathlib import Path

from rnncap.data.vocab import Vocabulary
from rnncap.models.captioner_config import CaptionerConfig
from rnncap.utils.config import ConfigError
from rnncap.utils.errors import ModelError
from rnncap.utils.io import MAX_CONFIG_BYTES, InvalidFileError, read_json_file

CONFIG, VOCAB, WEIGHTS = "config.json", "vocab.json", "model.safetensors"


class ModelNotFoundError(ModelError, FileNotFoundError):
    """No model at the path or name given (a FileNotFoundError too)."""


class IncompatibleModelError(ModelError, ValueError):
    """A model that does not fit what it is used with: other features, another vocabulary,
    another model's shape; the message names the model."""


DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "default"


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


def check_weight_shapes(path: Path, expected: dict, found: dict) -> None:
    """The weights' names and shapes in the file (`found`: name -> shape) against those the
    config implies (`expected`); InvalidFileError naming the first difference."""
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        problem = f"missing tensor {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise InvalidFileError(
            path, f"{problem}: the weights do not belong to the model {CONFIG} describes"
        )
    for name, shape in expected.items():
        if tuple(found[name]) != tuple(shape):
            raise InvalidFileError(
                path,
                f"tensor {name!r} has shape {list(found[name])}, {CONFIG} implies {list(shape)}",
            )
