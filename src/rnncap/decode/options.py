"""How a caption is searched for: `DecodeOptions`, validated once; a model folder's config.json
"decoding" section holds its own, and the command line's flags override them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rnncap.models.captioner_config import MAX_LENGTH
from rnncap.utils.config import ConfigError, check_range, check_types, config_from_dict

MAX_BEAM = 100  # hypotheses per image at most: the search holds beam x images decoder states
MAX_FUSION_WEIGHT = 10.0  # a language model's weight in the fused score at most


@dataclass(frozen=True)
class DecodeOptions:
    """How a caption is searched for. A model folder may set these in config.json "decoding"."""

    beam_size: int = 3  # hypotheses kept per image; 1 = greedy
    max_length: int | None = None  # words per caption at most; None: the model's max_length
    length_penalty: float = 0.0  # rank finished beams by score / length**a; 0: the plain sum
    no_repeat_ngram: int = 0  # n > 0: no caption holds the same n words in a row twice
    guidance: float = 0.0  # classifier guidance: bonus weight for words of confident classes
    guidance_threshold: float = 0.3  # ImageNet class probability from which a class counts
    no_end_after: tuple[str, ...] = ()  # words a caption may not end on, e.g. "a", "the"
    must_name: float = 0.0  # > 0: the caption names a class of at least this probability
    lm_weight: float = 0.0  # shallow fusion: + this x log p of the model folder's lm/
    source_lm_weight: float = 0.0  # density ratio: - this x log p of its source_lm/

    def __post_init__(self) -> None:
        """Types and ranges; a ConfigError (a ValueError) names the bad field."""
        if isinstance(self.no_end_after, list):  # as read from JSON
            object.__setattr__(self, "no_end_after", tuple(self.no_end_after))
        check_types(self)
        if self.beam_size < 1:
            raise ConfigError("beam_size", f"must be >= 1, got {self.beam_size}")
        check_range("beam_size", self.beam_size, 1, MAX_BEAM)
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError("max_length", f"must be >= 1, got {self.max_length}")
        if self.max_length is not None:
            check_range("max_length", self.max_length, 1, MAX_LENGTH)
        # Ranges in which the search's sums stay finite and every setting still means something:
        # a length**20 divisor, or a bonus of 1e3 log-probability units, only breaks ties.
        for name, high in (("length_penalty", 10.0), ("guidance", 100.0)):
            value = getattr(self, name)
            if not 0 <= value <= high:  # NaN fails too
                raise ConfigError(name, f"must be between 0 and {high:g}, got {value:g}")
        check_range("no_repeat_ngram", self.no_repeat_ngram, 0, MAX_LENGTH)
        if not 0 < self.guidance_threshold <= 1:
            raise ConfigError(
                "guidance_threshold", f"must be in (0, 1], got {self.guidance_threshold}"
            )
        if not 0 <= self.must_name <= 1:  # NaN fails too
            raise ConfigError("must_name", f"must be in [0, 1] (0: off), got {self.must_name}")
        for name in ("lm_weight", "source_lm_weight"):
            check_range(name, getattr(self, name), 0.0, MAX_FUSION_WEIGHT)
        if not isinstance(self.no_end_after, tuple) or not all(
            isinstance(w, str) for w in self.no_end_after
        ):
            raise ConfigError("no_end_after", f"must be a list of words, got {self.no_end_after!r}")

    def to_dict(self) -> dict:
        values = asdict(self)
        values["no_end_after"] = list(self.no_end_after)  # JSON has lists, not tuples
        return values

    @classmethod
    def from_dict(cls, values: dict) -> DecodeOptions:
        return config_from_dict(cls, values, "decoding options")
