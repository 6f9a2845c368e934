"""The captioning decoder in NumPy, float32: `CaptioningRNN.init_state`/`step` for the rnn, lstm
and attention cells (with or without the deep output), for captioning without torch.

It reads model.safetensors through `rnncap.models.weight_store`, as the torch loader does, and
serves the one beam search (`rnncap.decode.beam`) with NumPy arrays; tested against the torch
model with the same weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnncap.models.captioner_config import CaptionerConfig
from rnncap.models.files import WEIGHTS
from rnncap.models.weight_store import read_arrays


def expected_shapes(config: CaptionerConfig) -> dict[str, tuple[int, ...]]:
    """The weights' names and shapes in a model folder of this config (the torch state dict's)."""
    V, W, H, C = config.vocab_size, config.wordvec_dim, config.hidden_dim, config.feature_dim
    G = H if config.cell_type == "rnn" else 4 * H  # gate width
    shapes = {
        "embed.weight": (V, W),
        "feature_proj.weight": (H, C),
        "feature_proj.bias": (H,),
        "cell.Wx": (W, G),
        "cell.Wh": (H, G),
        "cell.b": (G,),
    }
    if config.cell_type == "attn":
        shapes["cell.Wattn"] = (H, G)
    if config.deep_output:
        shapes |= {"out_h.weight": (W, H), "out_h.bias": (W,)}
        if config.cell_type == "attn":
            shapes |= {"out_context.weight": (W, H), "out_context.bias": (W,)}
    shapes |= {"vocab_proj.weight": (V, W if config.deep_output else H), "vocab_proj.bias": (V,)}
    return shapes


def read_numpy_weights(folder: str | Path, config: CaptionerConfig) -> dict[str, np.ndarray]:
    """model.safetensors as float32 arrays, after checking names and shapes against the config."""
    return read_arrays(Path(folder) / WEIGHTS, expected_shapes(config))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # no overflow for large |x|


def log_softmax(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """log softmax over the last axis, (B, V) -> (B, V), into `out` when given (x itself: in
    place, one (B, V) array fewer per step)."""
    shifted = np.subtract(x, x.max(axis=-1, keepdims=True), out=out)
    shifted -= np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return shifted


class NumpyDecoder:
    """`CaptioningRNN`'s decoding interface in NumPy: `init_state(features)` and
    `step(tokens, state)`, with `config` and `static_state` for the search.

    weights: the torch model's state dict as arrays (names as in `expected_shapes`), computed
    in `dtype` (float32; float64 for the exact comparisons of the tests).
    """

    def __init__(self, config: CaptionerConfig, weights: dict, dtype=np.float32) -> None:
        self.config = config
        self.w = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in weights.items()}
        # every word's input term x Wx + b of the gates, (V, G): a lookup per step
        self.word_table = self.w["embed.weight"] @ self.w["cell.Wx"] + self.w["cell.b"]
        self.vocab_t = np.ascontiguousarray(self.w["vocab_proj.weight"].T)  # (D, V)
        if config.cell_type == "attn":  # [h, context] x [Wh; Wattn]: one product per step
            self.w_hc = np.concatenate([self.w["cell.Wh"], self.w["cell.Wattn"]])  # (2H, 4H)
        self.static_state = (2,) if config.cell_type == "attn" else ()

    @classmethod
    def from_folder(cls, folder: str | Path, config: CaptionerConfig) -> NumpyDecoder:
        return cls(config, read_numpy_weights(folder, config))

    def project(self, features: np.ndarray) -> np.ndarray:
        """Encoder features (N, C, h, w) or (N, C) -> h0 (N, H) for rnn/lstm, A (N, H, P) attn."""
        features = np.asarray(features, dtype=self.w["feature_proj.weight"].dtype)
        if features.shape[1] != self.config.feature_dim:
            raise ValueError(
                f"features have {features.shape[1]} channels, the model expects "
                f"{self.config.feature_dim} (encoder {self.config.encoder})"
            )
        weight, bias = self.w["feature_proj.weight"], self.w["feature_proj.bias"]  # (H, C), (H,)
        N, C = features.shape[:2]
        if self.config.cell_type == "attn":
            if features.ndim == 2:
                raise ValueError(
                    "the attention model needs a spatial grid of features (N, C, h, w)"
                )
            return weight @ features.reshape(N, C, -1) + bias[:, None]  # (N, H, P)
        pooled = features.reshape(N, C, -1).mean(2) if features.ndim > 2 else features
        return pooled @ weight.T + bias  # (N, H)

    def init_state(self, features: np.ndarray) -> tuple[np.ndarray, ...]:
        """rnn (h,), lstm (h, c), attn (h, c, A (N, H, P), image (N,)): one row per image."""
        projected = self.project(features)
        if self.config.cell_type == "rnn":
            return (projected,)
        if self.config.cell_type == "lstm":
            return (projected, np.zeros_like(projected))
        h0 = projected.mean(2)  # (N, H)
        return (h0, h0.copy(), projected, np.arange(len(h0)))

    def step(self, tokens: np.ndarray, state: tuple[np.ndarray, ...]):
        """tokens (B,) -> (log_probs (B, V), new_state, attention (B, P) | None)."""
        xw = self.word_table[tokens]  # (B, G)
        weights, context = None, None
        if self.config.cell_type == "rnn":
            h = np.tanh(xw + state[0] @ self.w["cell.Wh"])
            new_state = (h,)
        elif self.config.cell_type == "lstm":
            h, c = _lstm_update(xw + state[0] @ self.w["cell.Wh"], state[1])
            new_state = (h, c)
        else:
            prev_h, prev_c, A, image = state
            context, weights = _attention(prev_h, A, image)
            a = np.concatenate([prev_h, context], axis=1) @ self.w_hc  # (B, 4H)
            a += xw
            h, c = _lstm_update(a, prev_c)
            new_state = (h, c, A, image)
        words = self.w["embed.weight"][tokens] if self.config.deep_output else None  # (B, W)
        logits = self._output(words, h, context)
        return log_softmax(logits, out=logits), new_state, weights

    def _output(self, x: np.ndarray, h: np.ndarray, context: np.ndarray | None) -> np.ndarray:
        """Vocabulary logits (B, V) from the word vector x (B, W), h and the context (B, H)."""
        z = h
        if self.config.deep_output:
            z = x + h @ self.w["out_h.weight"].T + self.w["out_h.bias"]
            if context is not None:
                z = z + context @ self.w["out_context.weight"].T + self.w["out_context.bias"]
            z = np.tanh(z)
        logits = z @ self.vocab_t  # (B, V)
        logits += self.w["vocab_proj.bias"]
        return logits


def _lstm_update(a: np.ndarray, prev_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gates a (B, 4H) in the order i, f, o, g and prev_c (B, H) -> (h, c)."""
    H = prev_c.shape[1]
    i, f, o = (_sigmoid(a[:, k * H : (k + 1) * H]) for k in range(3))
    g = np.tanh(a[:, 3 * H :])
    c = f * prev_c + i * g
    return o * np.tanh(c), c


def _attention(prev_h: np.ndarray, A: np.ndarray, image: np.ndarray):
    """Scaled dot-product attention of rows sharing grids: prev_h (B, H), A (N, H, P), image (B,)
    the grid of each row -> (context (B, H), weights (B, P)).

    As `rnncap.nn.attention`'s shared-grid attention: each image's rows are padded to the
    largest count k and multiplied with their grid at once, (N, k, H) x (N, H, P), so that a
    grid is read once per step rather than copied for every row.
    """
    N, H, P = A.shape
    B = len(prev_h)
    counts = np.bincount(image, minlength=N)  # (N,) rows per image
    k = int(counts.max())
    order = np.argsort(image, kind="stable")  # rows grouped by image, in row order
    starts = np.cumsum(counts) - counts  # (N,) where each image's group begins
    slot = np.empty_like(image)
    slot[order] = np.arange(B) - starts[image[order]]
    pos = image * k + slot  # (B,) each row's place in the padded (N * k) layout
    padded = np.zeros((N * k, H), prev_h.dtype)
    padded[pos] = prev_h
    scores = (padded.reshape(N, k, H) @ A).reshape(N * k, P)[pos]  # (B, P)
    scores = np.exp((scores - scores.max(1, keepdims=True)) / prev_h.dtype.type(np.sqrt(H)))
    weights = scores / scores.sum(1, keepdims=True)
    padded_weights = np.zeros((N * k, P), weights.dtype)
    padded_weights[pos] = weights
    context = padded_weights.reshape(N, k, P) @ A.transpose(0, 2, 1)  # (N, k, H)
    return context.reshape(N * k, H)[pos], weights
