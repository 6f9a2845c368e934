"""Save and load a captioning model as plain files: config.json + vocab.json + model.safetensors.

No pickled classes: the config is JSON, the vocabulary is JSON, the weights are safetensors
(float32, float16 or int8 blocks: `rnncap.models.weight_store`). The torch encoder is rebuilt by
name from its own pretrained weights; a folder may also hold it as encoder.onnx (`rnncap export`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.numpy import save

from rnncap.data.vocab import Vocabulary
from rnncap.models.captioning_rnn import CaptioningRNN
from rnncap.models.files import (  # noqa: F401 - re-exported: the folder's plain files
    CONFIG,
    DEFAULT_MODEL,
    VOCAB,
    WEIGHTS,
    IncompatibleModelError,
    ModelNotFoundError,
    check_weight_shapes,
    read_captioner_config,
    read_config,
    read_vocabulary,
    resolve_model_dir,
)
from rnncap.models.weight_store import pack, read_arrays
from rnncap.utils.io import atomic_write


def save_model(
    folder: str | Path,
    model: CaptioningRNN,
    vocab: Vocabulary,
    weights: str = "float32",
    extra: dict | None = None,
    files: dict | None = None,
    decoding: dict | None = None,
) -> Path:
    """Write the model folder atomically (a temporary folder renamed into place).

    weights: how model.safetensors stores them: "float32", "float16" or "int8" (int8 blocks
    with float16 scales, the bundled model's: `rnncap.models.weight_store`).
    extra: plain data merged into config.json under "info" (training flags, scores...).
    files: name -> writer(path) for more files that must land together with the weights
    (the training state of a resumable checkpoint).
    decoding: the model's own decoding settings (`DecodeOptions` as a dict), config.json
    "decoding": what `rnncap.load` and every command use when no flag overrides them.
    """

    def write(tmp: Path) -> None:
        state = {
            k: v.detach().cpu().float().numpy()
            if v.is_floating_point()
            else v.detach().cpu().numpy()
            for k, v in model.state_dict().items()
        }
        (tmp / WEIGHTS).write_bytes(
            save(pack(state, weights))
        )  # a full disk is an OSError naming the errno
        config = {"captioner": model.config.to_dict(), "info": extra or {}}
        if decoding:
            config["decoding"] = decoding
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        vocab.save(tmp / VOCAB)
        for name, write_file in (files or {}).items():
            write_file(tmp / name)

    return atomic_write(folder, write, folder=True)


def read_weights(folder: str | Path, config, build=CaptioningRNN) -> dict[str, torch.Tensor]:
    """model.safetensors as float32 tensors, after checking its names and shapes against the
    model `build(config)` (read from the file's header: nothing is allocated before)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build(config).state_dict().items()}
    arrays = read_arrays(Path(folder) / WEIGHTS, expected)
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


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
