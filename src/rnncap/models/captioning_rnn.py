"""The captioning model: CNN features -> from-scratch RNN, LSTM or attention LSTM -> words.

Built only from a `CaptionerConfig`; works on precomputed encoder features (training never has to
re-run the CNN) or on images through `encode`; `rnncap.decode.beam` uses `init_state`/`step`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rnncap.models.captioner_config import (  # noqa: F401 - re-exported: the model's config and limits
    CELL_TYPES,
    MAX_DIM,
    MAX_FEATURE_DIM,
    MAX_LENGTH,
    MAX_PARAMETERS,
    MAX_VOCAB,
    CaptionerConfig,
)
from rnncap.nn.attention import AttentionLSTM
from rnncap.nn.lstm import LSTM
from rnncap.nn.rnn import RNN
from rnncap.utils.config import ConfigError
from rnncap.utils.io import InvalidFileError

# The recurrent cells a captioner can use: name -> class(input_size, hidden_size). "attn" is the
# one that attends over the feature grid (its state carries the grid A).
CELLS: dict[str, type[nn.Module]] = {"rnn": RNN, "lstm": LSTM, "attn": AttentionLSTM}


def list_cell_types() -> list[str]:
    """Names of the registered recurrent cells."""
    return list(CELLS)


def get_cell(name: str) -> type[nn.Module]:
    """The cell class registered as `name`; an unknown name raises ConfigError (a ValueError)
    listing them."""
    if name not in CELLS:
        raise ConfigError("cell_type", f"must be one of {', '.join(CELLS)}, got {name!r}")
    return CELLS[name]


# Decoding's copies of the weights (every word's input term of the gates, (V, 4H); the vocabulary
# weight transposed, (D, V)) are made only when each fits here.
MAX_DECODING_COPY_BYTES = 64 * 2**20


class CaptioningRNN(nn.Module):
    """Image features -> caption log-probabilities, with a recurrent cell written from scratch.

    rnn/lstm: the pooled feature (N, C) is projected to the initial hidden state h0 (N, H).
    attn: the grid (N, C, h, w) is projected cell by cell to A (N, H, P), P = h*w; the attention
    LSTM starts from h0 = c0 = mean(A) and attends over A at every step.
    """

    def __init__(self, config: CaptionerConfig):
        super().__init__()
        self.config = config
        V, W, H, C = config.vocab_size, config.wordvec_dim, config.hidden_dim, config.feature_dim
        self.embed = nn.Embedding(V, W)
        self.feature_proj = nn.Linear(C, H)
        self.cell = get_cell(config.cell_type)(W, H)
        self.drop = nn.Dropout(config.dropout)
        if config.deep_output:
            self.out_h = nn.Linear(H, W)
            if config.cell_type == "attn":
                self.out_context = nn.Linear(H, W)
        self.vocab_proj = nn.Linear(W if config.deep_output else H, V)
        self._encoder = None  # built on demand, never part of the state dict
        self._decoding_copies: dict[str, tuple] = {}  # `_decoding_copy`: name -> (key, copy, ...)
        self.origin: Path | None = None  # the model folder it was loaded from, named in errors
        nn.init.normal_(self.embed.weight, std=0.1)

    # ----------------------------------------------------------------- features and images
    @property
    def encoder(self):
        """The CNN named in the config, with its pretrained weights, on the model's device."""
        from rnncap.models.encoders import build_encoder, list_encoders

        try:
            if self._encoder is None:
                self.set_encoder(build_encoder(self.config.encoder))
            param = self.vocab_proj.weight
            return self._encoder.to(param.device)  # a deferred encoder is built here
        except ValueError:
            if self.origin is None or self.config.encoder in list_encoders():
                raise
            raise InvalidFileError(  # the model folder names an encoder that does not exist
                self.origin / "config.json",
                f"unknown encoder {self.config.encoder!r}; known encoders: "
                f"{', '.join(list_encoders())}",
                field="captioner.encoder",
            ) from None

    def set_encoder(self, encoder) -> None:
        """Use an already built encoder (shared between models, a tiny one in tests, or any
        object with the Encoder interface such as the ONNX Runtime one).

        Kept out of the module tree: the state dict and parameters() stay the decoder's only.
        """
        object.__setattr__(self, "_encoder", encoder)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, S, S) preprocessed -> encoder features (N, C, h, w) or (N, C)."""
        return self.encoder(images)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        # Images have 3 channels; encoder features have C >= 16 of them.
        if x.dim() == 4 and x.shape[1] == 3 and self.config.feature_dim != 3:
            x = self.encode(x)
        return x.to(self.vocab_proj.weight.dtype)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder features -> h0 (N, H) for rnn/lstm, or A (N, H, P) for attn."""
        if features.shape[1] != self.config.feature_dim:
            raise ValueError(
                f"features have {features.shape[1]} channels, the model expects "
                f"{self.config.feature_dim} (encoder {self.config.encoder})"
            )
        if self.config.cell_type == "attn":
            if features.dim() == 2:
                raise ValueError(
                    "the attention model needs a spatial grid of features (N, C, h, w)"
                )
            grid = features.flatten(2).transpose(1, 2)  # (N, P, C)
            return self.feature_proj(grid).transpose(1, 2)  # (N, H, P)
        pooled = features.flatten(2).mean(2) if features.dim() > 2 else features  # (N, C)
        return self.feature_proj(pooled)  # (N, H)

    # ----------------------------------------------------------------- teacher forcing
    def forward(
        self, features: torch.Tensor, captions_in: torch.Tensor, repeats: int | torch.Tensor = 1
    ):
        """Teacher-forced logits.

        features: (N, C, h, w) or (N, C); captions_in: (N * repeats, T) token ids, where each
        image's `repeats` captions are consecutive rows (the projection is computed once per image).
        Returns logits (N * repeats, T, V) and attention weights (N * repeats, T, P) or None.
        """
        projected = self.project(self._features(features))
        if not isinstance(repeats, int) or repeats > 1:
            projected = projected.repeat_interleave(repeats, dim=0)
        x = self.drop(self.embed(captions_in))  # (N, T, W)
        weights = None
        if self.config.cell_type == "attn":
            h, weights = self.cell(x, projected)  # (N, T, H), (N, T, P)
        else:
            h = self.cell(x, projected)  # (N, T, H)
        context = None
        if weights is not None and self.config.deep_output:
            context = weights @ projected.transpose(1, 2)  # (N, T, H)
        return self.output(x, h, context), weights

    def output(self, x: torch.Tensor, h: torch.Tensor, context: torch.Tensor | None):
        """Vocabulary logits from the word vector x (.., W), hidden state h and context (.., H)."""
        if not self.config.deep_output:
            return self._vocab_logits(self.drop(h))
        z = x + self.out_h(h)
        if context is not None:
            z = z + self.out_context(context)
        return self._vocab_logits(self.drop(torch.tanh(z)))

    def _vocab_logits(self, z: torch.Tensor) -> torch.Tensor:
        """vocab_proj(z) for z (.., D) -> (.., V). Decoding multiplies by a contiguous copy of
        the transposed weight (D, V), kept until the weight changes: on a CPU the product with
        nn.Linear's (V, D) layout runs 1.2x (40 rows) to 2x (8 rows) slower."""
        weight = self.vocab_proj.weight
        if self._no_decoding_copies() or weight.nbytes > MAX_DECODING_COPY_BYTES:
            return self.vocab_proj(z)
        weight_t = self._decoding_copy("vocab_t", (weight,), lambda: weight.t().contiguous())
        flat = torch.addmm(self.vocab_proj.bias, z.reshape(-1, z.shape[-1]), weight_t)
        return flat.view(*z.shape[:-1], flat.shape[-1])

    # ----------------------------------------------------------------- decoding interface
    @property
    def static_state(self) -> tuple[int, ...]:
        """Positions in the decoder state that hold one entry per image and never change while
        decoding (attn: the grid A). A search keeps them as they are, whatever the rows it steps
        (several hypotheses or samples per image, a subset of them): each row finds its image
        through the state's own per-row entries (attn: `image`)."""
        return (2,) if self.config.cell_type == "attn" else ()

    def init_state(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Decoder state before the first word, one row per image (dim 0): rnn (h,), lstm
        (h, c), attn (h, c, A (N, H, P), image (N,) the grid of each row in A)."""
        projected = self.project(self._features(features))
        if self.config.cell_type == "rnn":
            return (projected,)
        if self.config.cell_type == "lstm":
            return (projected, torch.zeros_like(projected))
        h0 = projected.mean(2)  # (N, H)
        image = torch.arange(len(h0), device=h0.device)  # (N,) each row's grid in A
        return (h0, h0.clone(), projected, image)

    def step(self, tokens: torch.Tensor, state: tuple[torch.Tensor, ...]):
        """One step: tokens (B,) -> (log_probs (B, V), new_state, attention (B, P) | None)."""
        x = self.embed(tokens)  # (B, W)
        xw = self._input_term(tokens, x)  # (B, H) rnn, (B, 4H) lstm/attn
        weights, context = None, None
        if self.config.cell_type == "rnn":
            (h,) = state
            h = self.cell.step_from_input(xw, h)
            new_state = (h,)
        elif self.config.cell_type == "lstm":
            h, c = self.cell.step_from_input(xw, *state)
            new_state = (h, c)
        else:
            prev_h, prev_c, A, *rest = state  # rest: (image,); none: A holds a grid per row
            image = rest[0] if rest else None
            h, c, weights = self.cell.step_from_input(xw, prev_h, prev_c, A, image)
            new_state = (h, c, A, *rest)
            if self.config.deep_output:
                grids = A if image is None else A.index_select(0, image)  # (B, H, P)
                context = torch.bmm(grids, weights.unsqueeze(2)).squeeze(2)  # (B, H)
        log_probs = torch.log_softmax(self.output(x, h, context), dim=-1)  # (B, V)
        return log_probs, new_state, weights

    def _input_term(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The cell's input term x Wx + b for the words `tokens` (B,) with vectors x (B, W).

        Decoding (no gradients, eval mode) looks it up in a table of every word's term,
        computed once per set of weights (rebuilt when the embedding, Wx or b change), instead
        of a (B, W) x (W, 4H) product per step: the same values up to float rounding.
        """
        params = (self.embed.weight, self.cell.Wx, self.cell.b)
        V, G = self.embed.weight.shape[0], self.cell.Wx.shape[1]
        size = V * G * self.cell.Wx.element_size()
        if self._no_decoding_copies() or size > MAX_DECODING_COPY_BYTES:
            return self.cell.input_term(x)
        table = self._decoding_copy(
            "word_table", params, lambda: self.cell.input_term(self.embed.weight)
        )  # (V, G)
        return table.index_select(0, tokens)

    def _no_decoding_copies(self) -> bool:
        """Training and anything with gradients use the parameters themselves."""
        return torch.is_grad_enabled() or self.training

    def _decoding_copy(self, name: str, params: tuple, build) -> torch.Tensor:
        """build(), a tensor derived from `params` for decoding, made once and kept until one of
        them changes (in place, or replaced by another tensor); never in the state dict. The
        entry holds the params' storage, so that no new tensor can take over its address."""
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        kept = self._decoding_copies.get(name)
        if kept is None or kept[0] != key:
            held = tuple(p.detach() for p in params)
            kept = self._decoding_copies[name] = (key, build(), held)
        return kept[1]
