"""A NumPy image captioner (cell_type rnn | lstm | attn) built from the reference layers.

`loss(features, captions) -> (loss, grads)` trains it with no framework; `sample` decodes greedily.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnncap.numpy_ref._shapes import check_shapes
from rnncap.numpy_ref.attention import (
    attention_lstm_backward,
    attention_lstm_forward,
    attention_lstm_step_forward,
)
from rnncap.numpy_ref.layers import (
    affine_backward,
    affine_forward,
    temporal_affine_backward,
    temporal_affine_forward,
    temporal_softmax_loss,
    word_embedding_backward,
    word_embedding_forward,
)
from rnncap.numpy_ref.lstm import lstm_backward, lstm_forward, lstm_step_forward
from rnncap.numpy_ref.rnn import rnn_backward, rnn_forward, rnn_step_forward

CELL_TYPES = ("rnn", "lstm", "attn")


@dataclass
class NumpyCaptionerConfig:
    vocab_size: int  # V, special ids included
    input_dim: int = 512  # C, channels of the image features
    wordvec_dim: int = 128  # D
    hidden_dim: int = 128  # H
    # rnn | lstm: features (N, C) -> h0; attn: a feature grid (N, C, P) or (N, C, h, w) -> A
    cell_type: str = "rnn"
    pad_id: int = 0
    start_id: int = 1
    end_id: int = 2
    seed: int = 0  # for the weight initialisation


class NumpyCaptioner:
    """Features -> initial state (rnn, lstm) or attention grid A (attn); words -> RNN -> vocab.

    Parameters live in `self.params` (float64 arrays), named like their gradients in `loss`.
    """

    def __init__(self, config: NumpyCaptionerConfig):
        if config.cell_type not in CELL_TYPES:
            raise ValueError(f"cell_type: expected one of {CELL_TYPES}, got {config.cell_type!r}")
        self.config = config
        rng = np.random.default_rng(config.seed)
        V, C, D, H = config.vocab_size, config.input_dim, config.wordvec_dim, config.hidden_dim
        gates = H if config.cell_type == "rnn" else 4 * H
        self.params: dict[str, np.ndarray] = {
            "W_embed": rng.standard_normal((V, D)) / 10,
            "W_proj": rng.standard_normal((C, H)) / np.sqrt(C),
            "b_proj": np.zeros(H),
            "Wx": rng.standard_normal((D, gates)) / np.sqrt(D),
            "Wh": rng.standard_normal((H, gates)) / np.sqrt(H),
            "b": np.zeros(gates),
            "W_vocab": rng.standard_normal((H, V)) / np.sqrt(H),
            "b_vocab": np.zeros(V),
        }
        if config.cell_type == "attn":
            self.params["Wattn"] = rng.standard_normal((H, gates)) / np.sqrt(H)

    def _project(self, features: np.ndarray) -> tuple[np.ndarray, tuple]:
        """features (N, C) -> h0 (N, H), or for attn (N, C, P) | (N, C, h, w) -> A (N, H, P)."""
        p = self.params
        if self.config.cell_type != "attn":
            check_shapes(("W_proj", p["W_proj"], "C H"), ("features", features, "N C"))
            return affine_forward(features, p["W_proj"], p["b_proj"])
        if features.ndim == 4:
            features = features.reshape(features.shape[0], features.shape[1], -1)
        check_shapes(("W_proj", p["W_proj"], "C H"), ("features", features, "N C P"))
        A, cache = temporal_affine_forward(features.transpose(0, 2, 1), p["W_proj"], p["b_proj"])
        return A.transpose(0, 2, 1), cache  # (N, H, P)

    def loss(self, features: np.ndarray, captions: np.ndarray) -> tuple[float, dict]:
        """Teacher-forced loss on captions (N, T) of ids (<start> ... <end> <pad>...).

        Predicts captions[:, 1:] from captions[:, :-1]; returns (loss, grads like self.params).
        """
        cfg, p = self.config, self.params
        check_shapes(("captions", captions, "N T"))
        if captions.shape[1] < 2:
            raise ValueError(f"captions: expected shape (N, T) with T >= 2, got {captions.shape}")
        if not np.issubdtype(captions.dtype, np.integer):
            raise ValueError(f"captions: expected integer word ids, got dtype {captions.dtype}")
        if captions.min() < 0 or captions.max() >= cfg.vocab_size:
            raise ValueError(
                f"captions: word ids must lie in [0, {cfg.vocab_size}), "
                f"got {captions.min()}..{captions.max()}"
            )
        captions_in, captions_out = captions[:, :-1], captions[:, 1:]  # (N, T-1)
        mask = captions_out != cfg.pad_id

        init, proj_cache = self._project(features)  # h0 (N, H) or A (N, H, P)
        if init.shape[0] != captions.shape[0]:
            raise ValueError(
                f"captions: expected shape (N, T) = ({init.shape[0]}, T), got {captions.shape}"
            )
        x, embed_cache = word_embedding_forward(captions_in, p["W_embed"])  # (N, T-1, D)
        if cfg.cell_type == "rnn":
            h, rnn_cache = rnn_forward(x, init, p["Wx"], p["Wh"], p["b"])
        elif cfg.cell_type == "lstm":
            h, rnn_cache = lstm_forward(x, init, p["Wx"], p["Wh"], p["b"])
        else:
            h, _, rnn_cache = attention_lstm_forward(x, init, p["Wx"], p["Wh"], p["Wattn"], p["b"])
        scores, vocab_cache = temporal_affine_forward(h, p["W_vocab"], p["b_vocab"])  # (N, T-1, V)
        loss, dscores = temporal_softmax_loss(scores, captions_out, mask)

        grads: dict[str, np.ndarray] = {}
        dh, grads["W_vocab"], grads["b_vocab"] = temporal_affine_backward(dscores, vocab_cache)
        if cfg.cell_type == "rnn":
            dx, dinit, grads["Wx"], grads["Wh"], grads["b"] = rnn_backward(dh, rnn_cache)
        elif cfg.cell_type == "lstm":
            dx, dinit, grads["Wx"], grads["Wh"], grads["b"] = lstm_backward(dh, rnn_cache)
        else:
            dx, dinit, grads["Wx"], grads["Wh"], grads["Wattn"], grads["b"] = (
                attention_lstm_backward(dh, rnn_cache)
            )
        grads["W_embed"] = word_embedding_backward(dx, embed_cache)
        if cfg.cell_type == "attn":
            dinit = dinit.transpose(0, 2, 1)  # (N, P, H)
            _, grads["W_proj"], grads["b_proj"] = temporal_affine_backward(dinit, proj_cache)
        else:
            _, grads["W_proj"], grads["b_proj"] = affine_backward(dinit, proj_cache)
        return loss, grads

    def sample(self, features: np.ndarray, max_length: int = 30) -> np.ndarray:
        """Greedy decoding -> captions (N, max_length) of ids without <start>.

        Each row holds the words up to and including <end>, then <pad>.
        """
        cfg, p = self.config, self.params
        init, _ = self._project(features)
        N = init.shape[0]
        captions = np.full((N, max_length), cfg.pad_id, dtype=np.int64)
        words = np.full(N, cfg.start_id, dtype=np.int64)
        done = np.zeros(N, dtype=bool)
        if cfg.cell_type == "attn":
            A, h = init, init.mean(axis=2)  # (N, H, P), (N, H)
        else:
            A, h = None, init
        c = h if cfg.cell_type == "attn" else np.zeros_like(h)
        for t in range(max_length):
            x = p["W_embed"][words]  # (N, D)
            if cfg.cell_type == "rnn":
                h, _ = rnn_step_forward(x, h, p["Wx"], p["Wh"], p["b"])
            elif cfg.cell_type == "lstm":
                h, c, _ = lstm_step_forward(x, h, c, p["Wx"], p["Wh"], p["b"])
            else:
                h, c, _, _ = attention_lstm_step_forward(
                    x, h, c, A, p["Wx"], p["Wh"], p["Wattn"], p["b"]
                )
            words = (h @ p["W_vocab"] + p["b_vocab"]).argmax(axis=1)  # (N,)
            captions[~done, t] = words[~done]
            done |= words == cfg.end_id
            if done.all():
                break
        return captions
