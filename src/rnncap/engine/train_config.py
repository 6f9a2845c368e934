"""The training options as one dataclass that checks itself: a value no run can use is refused
with a `ConfigError` naming the field, from Python and the command line alike. Importing it does
not import torch, so the CLI can list the options quickly; checking one does.
"""

from __future__ import annotations

from dataclasses import dataclass

from rnncap.utils.config import ConfigError, check_range, check_types, config_from_dict


@dataclass
class TrainConfig:
    data: str = ""  # data set root (required)
    format: str = "flickr8k"  # flickr8k | coco | karpathy
    # more photo data sets for training: "FORMAT:DIR[@WEIGHT],..." (their train split; each image
    # drawn WEIGHT times an epoch); dev and test stay those of `data`
    extra_data: str = ""
    text_data: str = ""  # caption text without photos (.jsonl {"captions": [...]} or .txt lines)
    text_ratio: float = 0.0  # caption groups of text_data added per photo of a batch (xe only)
    features: str = "cache/features"  # feature cache folder (`rnncap features --out`)
    encoder: str = "efficientnet_lite0"
    out: str = "runs/attn"  # run folder
    objective: str = "xe"  # xe: cross-entropy (teacher forcing) | scst: self-critical, CIDEr-D
    init: str = ""  # start from this model folder / run (its weights and vocabulary); scst needs it
    # with init: its vocabulary grows by this run's words (min_count); their rows start fresh
    grow_vocab: bool = False
    samples_per_image: int = 5  # scst: captions sampled per image (baseline: the others' mean)
    reward_end: bool = False  # scst: CIDEr-D also scores the caption's ending (an end word)
    mirror: float = 0.0  # chance an image is seen mirrored ("left" <-> "right" in its captions)
    cell_type: str = "attn"  # rnn | lstm | attn
    wordvec_dim: int = 256
    hidden_dim: int = 512
    dropout: float = 0.3
    deep_output: bool = False  # logits from word vector + hidden state + context (attn)
    min_count: int = 5  # words seen fewer times in train become <unk>
    max_caption_words: int = 22  # longer training captions are truncated
    max_length: int = 20  # decoding length
    epochs: int = 12
    batch_images: int = 32  # images per batch; every caption of each image is used
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05  # cosine decay to lr * min_lr_ratio
    clip: float = 5.0  # gradient norm clipping
    attention_reg: float = 1.0  # doubly stochastic attention (Show, Attend and Tell), attn only
    patience: int = 4  # early stopping: epochs without dev CIDEr gain
    eval_images: int = 1000  # dev images captioned for CIDEr each epoch (0: all)
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bfloat16 autocast on CUDA
    tf32: bool = False  # TensorFloat-32 for CUDA float32 products (the recurrence runs in float32)
    deterministic: bool = False  # deterministic CUDA kernels: a CUDA run repeats bit for bit
    resume: bool = False
    dry_run: bool = False  # one batch, one tiny evaluation, no files beyond the run folder
    limit_images: int = 0  # use only the first N train/dev images (0: all); for smoke tests
    progress: bool = True

    def __post_init__(self) -> None:
        """Types and the rules between options; a ConfigError names the field."""
        from rnncap.data.datasets import list_formats
        from rnncap.engine.objectives import OBJECTIVES
        from rnncap.engine.sources import parse_sources
        from rnncap.models.captioning_rnn import list_cell_types

        check_types(self)
        _check_choice("objective", self.objective, list(OBJECTIVES))
        _check_choice("cell_type", self.cell_type, list_cell_types())
        _check_choice("format", self.format, list_formats())
        if self.objective == "scst" and not self.init:
            raise ConfigError("init", "objective scst needs init (a cross-entropy model or run)")
        if self.grow_vocab and not self.init:
            raise ConfigError("grow_vocab", "needs init (the model whose vocabulary grows)")
        if self.samples_per_image < 2:
            raise ConfigError(
                "samples_per_image", f"must be at least 2, got {self.samples_per_image}"
            )
        check_range("mirror", self.mirror, 0, 1)
        if self.text_ratio < 0:
            raise ConfigError("text_ratio", f"must be >= 0, got {self.text_ratio}")
        for name in ("epochs", "batch_images", "max_caption_words", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        parse_sources(self.extra_data)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return config_from_dict(cls, d, "training options")


def _check_choice(name: str, value: str, choices: list[str]) -> None:
    if value not in choices:
        raise ConfigError(name, f"must be one of {', '.join(choices)}, got {value!r}")
