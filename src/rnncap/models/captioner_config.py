"""The captioning model's configuration and size limits, without torch: a model folder's
config.json "captioner" section is read and checked here by every backend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rnncap.utils.config import ConfigError, check_range, check_types, config_from_dict

CELL_TYPES = ("rnn", "lstm", "attn")  # the recurrent cells (rnncap.models.captioning_rnn.CELLS)

# Upper bounds that no sensible model reaches: a config beyond them is a typo or a hostile file,
# refused before anything is allocated.
MAX_DIM = 8192  # wordvec_dim, hidden_dim
MAX_FEATURE_DIM = 16384  # encoder channels (ResNet-152: 2048)
MAX_VOCAB = 500_000
MAX_LENGTH = 1000  # words per decoded caption
MAX_PARAMETERS = 500_000_000  # 2 GB of float32 weights


@dataclass
class CaptionerConfig:
    encoder: str = "efficientnet_lite0"  # see rnncap.models.encoders.list_encoders()
    feature_dim: int = 1280  # channels of the encoder output
    cell_type: str = "attn"  # rnn | lstm | attn
    wordvec_dim: int = 256  # word embedding size
    hidden_dim: int = 512  # recurrent state size
    vocab_size: int = 0  # set from the vocabulary
    pad_id: int = 0
    start_id: int = 1
    end_id: int = 2
    unk_id: int = 3
    max_length: int = 20  # words emitted at most when decoding
    dropout: float = 0.0  # on word vectors and before the vocabulary projection
    # Show, Attend and Tell's "deep output": logits = Lo tanh(E y + Lh h + Lz context), word-vector
    # sized, instead of logits = Lo h.
    deep_output: bool = False

    def __post_init__(self) -> None:
        """Types, ranges and ids inside the vocabulary; a ConfigError names the bad field."""
        check_types(self)
        if self.cell_type not in CELL_TYPES:
            raise ConfigError(
                "cell_type", f"must be one of {', '.join(CELL_TYPES)}, got {self.cell_type!r}"
            )
        if not self.encoder:
            raise ConfigError("encoder", "must name an encoder")
        if self.vocab_size <= 0:
            raise ConfigError("vocab_size", f"must be positive, got {self.vocab_size}")
        check_range("vocab_size", self.vocab_size, 1, MAX_VOCAB)
        check_range("feature_dim", self.feature_dim, 1, MAX_FEATURE_DIM)
        check_range("wordvec_dim", self.wordvec_dim, 1, MAX_DIM)
        check_range("hidden_dim", self.hidden_dim, 1, MAX_DIM)
        check_range("max_length", self.max_length, 1, MAX_LENGTH)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        ids = {
            "pad_id": self.pad_id,
            "start_id": self.start_id,
            "end_id": self.end_id,
            "unk_id": self.unk_id,
        }
        for name, value in ids.items():
            if not 0 <= value < self.vocab_size:
                raise ConfigError(
                    name, f"{value} is outside the vocabulary (ids 0 to {self.vocab_size - 1})"
                )
        if len(set(ids.values())) < len(ids):
            raise ConfigError("pad_id", f"the special ids must differ, got {ids}")
        if self.num_parameters() > MAX_PARAMETERS:
            raise ConfigError(
                "hidden_dim",
                f"these sizes make {self.num_parameters():,} parameters, more than "
                f"the {MAX_PARAMETERS:,} allowed",
            )

    def num_parameters(self) -> int:
        """The decoder's parameter count, from the sizes alone (nothing is allocated)."""
        V, W, H, C = self.vocab_size, self.wordvec_dim, self.hidden_dim, self.feature_dim
        gates = {"rnn": H, "lstm": 4 * H, "attn": 4 * H}[self.cell_type]
        recurrent = 2 if self.cell_type == "attn" else 1  # Wh, and Wattn for attn
        count = V * W + (C * H + H) + (W * gates + recurrent * H * gates + gates)
        if self.deep_output:
            count += (H * W + W) * (2 if self.cell_type == "attn" else 1)
        return count + (W if self.deep_output else H) * V + V

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CaptionerConfig:
        return config_from_dict(cls, d, "captioner config keys")
