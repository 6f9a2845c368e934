"""The Show-and-Tell model as a model folder: config.json ("kind": "show_tell"), vocab.json and
model.safetensors (encoder and decoder), so `rnncap.load` takes it like any other model.

`rnncap convert-show-tell` writes one from the original pickle files (`save_show_tell`), once;
`load_show_tell_folder` reads it back with the same checks as the pickles (every key and shape).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from rnncap.models.folder import CONFIG, VOCAB, WEIGHTS, read_config
from rnncap.models.showtell import (
    EMBED_SIZE,
    HIDDEN_SIZE,
    DecoderRNN,
    EncoderCNN,
    ShowTell,
    ShowTellConfig,
    ShowTellVocab,
    load_state_dict_strict,
    vocab_from_words,
)
from rnncap.nn.lstm import LSTM
from rnncap.utils.io import (
    MAX_VOCAB_BYTES,
    InvalidFileError,
    atomic_write,
    first_line,
    read_json_file,
)

KIND = "show_tell"  # config.json "kind" of a Show-and-Tell folder; absent: an rnncap captioner
GREEDY = {"beam_size": 1}  # the original's decoding, the folder's default


def save_show_tell(folder: str | Path, model: ShowTell, info: dict | None = None) -> Path:
    """Write `model` as a model folder, atomically; `info` goes to config.json "info"."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}

    def write(tmp: Path) -> None:
        (tmp / WEIGHTS).write_bytes(save(state))  # a full disk is an OSError naming the errno
        config = {
            "kind": KIND,
            KIND: {"vocab_size": len(model.vocab)},
            "decoding": GREEDY,
            "info": info or {},
        }
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        words = json.dumps({"tokens": model.vocab.itos}, indent=0)
        (tmp / VOCAB).write_text(words + "\n", encoding="utf-8")

    return atomic_write(folder, write, folder=True)


def is_show_tell(folder: str | Path) -> bool:
    """Whether the model folder holds a Show-and-Tell model (config.json "kind")."""
    return read_config(folder).get("kind") == KIND


def load_show_tell_folder(folder: str | Path, device: str | torch.device = "cpu") -> ShowTell:
    """The Show-and-Tell model of a folder written by `save_show_tell`, in eval mode on `device`.

    Raises InvalidFileError naming the file (config.json, vocab.json) or ShowTellError naming
    model.safetensors and the key, when one cannot be used.
    """
    folder = Path(folder)
    vocab = _read_vocab(folder / VOCAB)
    section = read_config(folder).get(KIND)
    if not isinstance(section, dict) or section.get("vocab_size") != len(vocab):
        raise InvalidFileError(
            folder / CONFIG, f"{KIND}.vocab_size must be {len(vocab)}, the words of {VOCAB}"
        )
    state = _read_weights(folder / WEIGHTS)
    config = ShowTellConfig(end_id=vocab.word2idx["<end>"], no_word=len(vocab))
    with torch.device("meta"):  # no time spent initialising weights that are overwritten
        embed, lstm = nn.Embedding(len(vocab), EMBED_SIZE), LSTM(EMBED_SIZE, HIDDEN_SIZE)
        decoder = DecoderRNN(embed, lstm, nn.Linear(HIDDEN_SIZE, len(vocab)), config)
        model = ShowTell(EncoderCNN(), decoder, vocab)
    load_state_dict_strict(model, state, folder / WEIGHTS, hint=f"{len(vocab)} words")
    return model.to(device).eval()


def _read_vocab(path: Path) -> ShowTellVocab:
    try:
        data = read_json_file(path, MAX_VOCAB_BYTES)
    except FileNotFoundError:
        raise InvalidFileError(path, "no such file") from None
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, list):
        raise InvalidFileError(path, 'expected {"tokens": [words in id order]}')
    return vocab_from_words(tokens, path)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise InvalidFileError(
            path, f"truncated or not a safetensors file ({first_line(error)})"
        ) from None
