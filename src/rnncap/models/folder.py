"""Save and load a captioning model as plain files: config.json + vocab.json + model.safetensors.

No pickled classes: the config is JSON, the vocabulary is JSON, the weights are safetensors. The
encoder is not stored; it is rebuilt by name from its own pretrained weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rnncap.data.vocab import Vocabulary
from rnncap.models.captioner import CaptionerConfig, CaptioningRNN
from rnncap.utils.io import atomic_write

CONFIG, VOCAB, WEIGHTS = "config.json", "vocab.json", "model.safetensors"
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
        save_file(state, str(tmp / WEIGHTS))
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
            raise FileNotFoundError(f"the bundled default model is missing from {path}")
        return path
    path = Path(spec)
    if path.is_file() and path.name.endswith(".safetensors"):
        path = path.parent
    for candidate in (path, path / "best", path / "last"):
        if (candidate / WEIGHTS).is_file() and (candidate / CONFIG).is_file():
            return candidate
    if not path.exists():
        raise FileNotFoundError(f"model {spec}: no such file or folder")
    raise FileNotFoundError(f"model {spec}: no {CONFIG} + {WEIGHTS} found (nor in best/ or last/)")


def read_config(folder: str | Path) -> dict:
    return json.loads((Path(folder) / CONFIG).read_text())


def load_model(spec: str | Path = "default", device: str | torch.device = "cpu"):
    """Rebuild a saved model in eval mode -> (model, vocab). Weights load strictly, as float32."""
    folder = resolve_model_dir(spec)
    config = CaptionerConfig.from_dict(read_config(folder)["captioner"])
    vocab = Vocabulary.load(folder / VOCAB)
    if len(vocab) != config.vocab_size:
        raise ValueError(
            f"{folder}: vocabulary has {len(vocab)} words, config says {config.vocab_size}"
        )
    model = CaptioningRNN(config)
    state = {
        k: v.float() if v.is_floating_point() else v
        for k, v in load_file(str(folder / WEIGHTS)).items()
    }
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), vocab
