"""A word-level language model on caption text: embedding, the from-scratch RNN/LSTM, a linear head.

`torch-lstm` swaps in `torch.nn.LSTM` as the reference the from-scratch cells are compared with;
training, perplexity and sampling live in `rnncap.engine.lm_train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from rnncap.models.captioning_rnn import MAX_DIM, MAX_VOCAB
from rnncap.nn import LSTM, RNN
from rnncap.utils.config import ConfigError, check_range, check_types

CELLS = ("rnn", "lstm", "torch-lstm")


@dataclass
class LMConfig:
    """The language model; stored in config.json so a checkpoint rebuilds itself."""

    cell: str = "lstm"  # rnn | lstm (from scratch) | torch-lstm (torch.nn.LSTM, the reference)
    vocab_size: int = 0  # set from the vocabulary
    embed_dim: int = 128  # word vector size
    hidden_dim: int = 256  # recurrent state size
    dropout: float = 0.1  # on word vectors and on hidden states before the output layer

    def __post_init__(self) -> None:
        """Types and ranges, as for the captioner; a ConfigError names the bad field."""
        check_types(self)
        if self.cell not in CELLS:
            raise ConfigError("cell", f"must be one of {', '.join(CELLS)}, got {self.cell!r}")
        check_range("vocab_size", self.vocab_size, 0, MAX_VOCAB)  # 0: not set yet
        check_range("embed_dim", self.embed_dim, 1, MAX_DIM)
        check_range("hidden_dim", self.hidden_dim, 1, MAX_DIM)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")


class LanguageModel(nn.Module):
    """Embedding -> recurrent layer -> linear layer over the vocabulary."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        E, H, V = config.embed_dim, config.hidden_dim, config.vocab_size
        self.embed = nn.Embedding(V, E)
        if config.cell == "rnn":
            self.rnn = RNN(E, H)
        elif config.cell == "lstm":
            self.rnn = LSTM(E, H)
        else:  # the reference implementation, used only for comparison
            self.rnn = nn.LSTM(E, H, batch_first=True)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(H, V)

    def forward(self, tokens: Tensor) -> Tensor:
        """Next-word logits (N, T, V) for token ids (N, T)."""
        x = self.drop(self.embed(tokens))  # (N, T, E)
        h = self.rnn(x)
        if isinstance(h, tuple):  # torch.nn.LSTM returns (output, (h_n, c_n))
            h = h[0]
        return self.head(self.drop(h))  # (N, T, V)

    def init_state(self, n: int) -> tuple[Tensor, ...]:
        """Zero state for n sequences: (h,) for rnn, (h, c) for the LSTMs, each (n, H)."""
        zeros = self.head.weight.new_zeros(n, self.config.hidden_dim)
        return (zeros,) if self.config.cell == "rnn" else (zeros, zeros.clone())

    def step(self, tokens: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One word: tokens (n,) and state -> (logits (n, V), new state)."""
        x = self.embed(tokens)  # (n, E)
        if self.config.cell == "rnn":
            state = (self.rnn.step(x, state[0]),)
        elif self.config.cell == "lstm":
            state = self.rnn.step(x, *state)
        else:
            h, c = state
            _, (h, c) = self.rnn(x.unsqueeze(1), (h.unsqueeze(0), c.unsqueeze(0)))
            state = (h[0], c[0])
        return self.head(state[0]), state

    @property
    def state_entries(self) -> int:
        """How many tensors `init_state` returns: 1 (rnn) or 2 (h, c)."""
        return 1 if self.config.cell == "rnn" else 2


def load_language_model(folder: str | Path, device: torch.device | str = "cpu"):
    """Rebuild a model saved by `rnncap lm` from its folder -> (model, vocab); InvalidFileError
    (one line naming the file, and the field) when one of its files cannot be used."""
    from rnncap.data.vocab import Vocabulary
    from rnncap.models.folder import CONFIG, read_config, read_weights
    from rnncap.utils.config import config_from_dict
    from rnncap.utils.io import InvalidFileError

    folder = Path(folder)
    section = read_config(folder).get("model")
    if not isinstance(section, dict):
        raise InvalidFileError(folder / CONFIG, "no 'model' section (not a language model)")
    try:
        config = config_from_dict(LMConfig, section, "model options")
    except ConfigError as error:
        raise InvalidFileError(folder / CONFIG, error.reason, f"model.{error.field}") from None
    vocab = Vocabulary.load(folder / "vocab.json")
    if len(vocab) != config.vocab_size:
        raise InvalidFileError(
            folder / "vocab.json",
            f"{len(vocab)} words, but {CONFIG} says vocab_size {config.vocab_size}",
        )
    model = LanguageModel(config)
    model.load_state_dict(read_weights(folder, config, build=LanguageModel))
    return model.to(device).eval(), vocab
