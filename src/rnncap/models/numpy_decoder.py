"""The captioning decoder in NumPy, float32: `CaptioningRNN.init_state`/`step` for the rnn, lstm
and attention cells (with or without the deep output), for captioning without torch.

It reads model.safetensors through `safetensors.numpy` and serves the one beam search
(`rnncap.decode.beam`) with NumPy arrays; tested against the torch model with the same weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnncap.models.config import CaptionerConfig
from rnncap.models.files import WEIGHTS, check_weight_shapes
from rnncap.utils.io import InvalidFileError, first_line


def expected_shapes(config: CaptionerConfig) -> dict[str, tuple[int, ...]]:
    """The weights' names and shapes in a model folder of this config (the torch state dict's)."""
    V, W, H, C = config.vocab_size, config.wordvec_dim, config.hidden_dim, config.feature_dim
    G = H if config.cell_type == "rnn" else 4 * H  # gate width
    shapes = {"embed.weight": (V, W), "feature_proj.weight": (H, C), "feature_proj.bias": (H,),
              "cell.Wx": (W, G), "cell.Wh": (H, G), "cell.b": (G,)}  # fmt: skip
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
    from safetensors import SafetensorError, safe_open

    path = Path(folder) / WEIGHTS
    try:
        with safe_open(str(path), framework="numpy") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            check_weight_shapes(path, expected_shapes(config), found)
            return {k: f.get_tensor(k).astype(np.float32) for k in f.keys()}
    except (OSError, SafetensorError) as error:
        raise InvalidFileError(
            path, f"truncated or not a safetensors file ({first_line(error)})"
        ) from None


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # no overflow for large |x|


def log_softmax(x: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, (B, V) -> (B, V)."""
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


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
            grid = features.reshape(N, C, -1).transpose(0, 2, 1)  # (N, P, C)
            return (grid @ weight.T + bias).transpose(0, 2, 1)  # (N, H, P)
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
            grids = A[image]  # (B, H, P) each row's image
            context, weights = _attention(prev_h, grids)
            a = xw + prev_h @ self.w["cell.Wh"] + context @ self.w["cell.Wattn"]  # (B, 4H)
            h, c = _lstm_update(a, prev_c)
            new_state = (h, c, A, image)
        logits = self._output(self.w["embed.weight"][tokens], h, context)
        return log_softmax(logits), new_state, weights

    def _output(self, x: np.ndarray, h: np.ndarray, context: np.ndarray | None) -> np.ndarray:
        """Vocabulary logits (B, V) from the word vector x (B, W), h and the context (B, H)."""
        z = h
        if self.config.deep_output:
            z = x + h @ self.w["out_h.weight"].T + self.w["out_h.bias"]
            if context is not None:
                z = z + context @ self.w["out_context.weight"].T + self.w["out_context.bias"]
            z = np.tanh(z)
        return z @ self.vocab_t + self.w["vocab_proj.bias"]


def _lstm_update(a: np.ndarray, prev_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gates a (B, 4H) in the order i, f, o, g and prev_c (B, H) -> (h, c)."""
    H = prev_c.shape[1]
    i, f, o = (_sigmoid(a[:, k * H : (k + 1) * H]) for k in range(3))
    g = np.tanh(a[:, 3 * H :])
    c = f * prev_c + i * g
    return o * np.tanh(c), c


def _attention(prev_h: np.ndarray, grids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scaled dot-product attention: prev_h (B, H), grids (B, H, P) -> (context (B, H),
    weights (B, P))."""
    H = grids.shape[1]
    scores = (prev_h[:, None, :] @ grids)[:, 0] / prev_h.dtype.type(np.sqrt(H))  # (B, P)
    scores = np.exp(scores - scores.max(1, keepdims=True))
    weights = scores / scores.sum(1, keepdims=True)
    return (grids @ weights[:, :, None])[:, :, 0], weights
