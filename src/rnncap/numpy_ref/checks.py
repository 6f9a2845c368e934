"""Every NumPy backward checked against centred differences: the suite behind `rnncap gradcheck`.

Small random float64 inputs; one row per (function, gradient) with its maximum relative error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rnncap.numpy_ref import attention, layers, lstm, rnn
from rnncap.numpy_ref.captioning import CELL_TYPES, NumpyCaptioner, NumpyCaptionerConfig
from rnncap.numpy_ref.gradcheck import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    rel_error,
)

LAYER_TOLERANCE = 1e-7  # gradients of layers
LOSS_TOLERANCE = 1e-6  # gradients of a loss (a sum over many terms, so more round-off)
STEP, POINTS = 1e-3, 4  # fourth-order centred differences: absolute error ~1e-12


@dataclass
class GradCheck:
    function: str
    parameter: str  # the gradient's name, e.g. "dWx"
    error: float  # max relative error, analytic vs numerical
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(self.error < self.tolerance)


def check_layer(
    function: str,
    forward: Callable,
    backward: Callable,
    inputs: dict[str, np.ndarray],
    wrt: list[str],
    n_outputs: int,
    rng: np.random.Generator,
    tolerance: float = LAYER_TOLERANCE,
) -> list[GradCheck]:
    """Check `backward(*douts, cache)` against finite differences of `forward(**inputs)`.

    forward returns (out_1, ..., out_k, cache); the first n_outputs outputs get random upstream
    gradients; backward returns the gradients of the inputs named in `wrt`, in that order.
    """
    *outs, cache = forward(**inputs)
    douts = [rng.standard_normal(np.shape(o)) for o in outs[:n_outputs]]
    grads = backward(*douts, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)

    def flat_outputs(_: np.ndarray) -> np.ndarray:  # (sum of output sizes,)
        return np.concatenate([np.ravel(o) for o in forward(**inputs)[:n_outputs]])

    dflat = np.concatenate([d.ravel() for d in douts])
    results = []
    for name, grad in zip(wrt, grads, strict=True):
        numeric = eval_numerical_gradient_array(flat_outputs, inputs[name], dflat, STEP, POINTS)
        results.append(GradCheck(function, f"d{name}", rel_error(numeric, grad), tolerance))
    return results


def layer_checks(seed: int = 0) -> list[GradCheck]:
    """Gradient checks of every NumPy layer's backward."""
    rng = np.random.default_rng(seed)
    N, T, D, H, P, V = 3, 4, 5, 6, 4, 7

    def randn(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape)

    results: list[GradCheck] = []
    cases = _recurrent_cases(randn, N, T, D, H, P) + _affine_cases(randn, N, T, D, H)
    for function, forward, backward, inputs, n_outputs in cases:
        wrt = [name for name in inputs]  # every input is differentiable here
        results += check_layer(function, forward, backward, inputs, wrt, n_outputs, rng)
    return results + _embedding_and_loss_checks(rng, N, T, D, V)


def _recurrent_cases(randn: Callable, N: int, T: int, D: int, H: int, P: int) -> list[tuple]:
    """(name, forward, backward, inputs in argument order, number of outputs) of every RNN, LSTM
    and attention layer, step and sequence."""
    rnn_params = {"Wx": randn(D, H) * 0.5, "Wh": randn(H, H) * 0.5, "b": randn(H)}
    lstm_params = {"Wx": randn(D, 4 * H) * 0.5, "Wh": randn(H, 4 * H) * 0.5, "b": randn(4 * H)}
    attn_params = {
        "Wx": lstm_params["Wx"],
        "Wh": lstm_params["Wh"],
        "Wattn": randn(H, 4 * H) * 0.5,
        "b": lstm_params["b"],
    }  # in argument order
    step = {"x": randn(N, D), "prev_h": randn(N, H)}
    lstm_step = {**step, "prev_c": randn(N, H)}
    return [
        ("rnn_step", rnn.rnn_step_forward, rnn.rnn_step_backward, {**step, **rnn_params}, 1),
        (
            "rnn",
            rnn.rnn_forward,
            rnn.rnn_backward,
            {"x": randn(N, T, D), "h0": randn(N, H), **rnn_params},
            1,
        ),
        (
            "lstm_step",
            lstm.lstm_step_forward,
            lstm.lstm_step_backward,
            {**lstm_step, **lstm_params},
            2,
        ),
        (
            "lstm",
            lstm.lstm_forward,
            lstm.lstm_backward,
            {"x": randn(N, T, D), "h0": randn(N, H), **lstm_params},
            1,
        ),
        (
            "attention",
            attention.attention_forward,
            attention.attention_backward,
            {"prev_h": randn(N, H), "A": randn(N, H, P)},
            1,
        ),
        (
            "attention_lstm_step",
            attention.attention_lstm_step_forward,
            attention.attention_lstm_step_backward,
            {**lstm_step, "A": randn(N, H, P), **attn_params},
            2,
        ),
        (
            "attention_lstm",
            attention.attention_lstm_forward,
            attention.attention_lstm_backward,
            {"x": randn(N, T, D), "A": randn(N, H, P), **attn_params},
            1,
        ),
    ]


def _affine_cases(randn: Callable, N: int, T: int, D: int, H: int) -> list[tuple]:
    """The affine layer, per position and over a sequence."""
    return [
        (
            "affine",
            layers.affine_forward,
            layers.affine_backward,
            {"x": randn(N, D), "w": randn(D, H), "b": randn(H)},
            1,
        ),
        (
            "temporal_affine",
            layers.temporal_affine_forward,
            layers.temporal_affine_backward,
            {"x": randn(N, T, D), "w": randn(D, H), "b": randn(H)},
            1,
        ),
    ]


def _embedding_and_loss_checks(rng: np.random.Generator, N: int, T: int, D: int, V: int):
    """The word embedding (gradient for W only) and the temporal softmax loss (for the scores)."""

    def randn(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape)

    results: list[GradCheck] = []
    words = rng.integers(0, V, size=(N, T))
    results += check_layer(
        "word_embedding",
        layers.word_embedding_forward,
        layers.word_embedding_backward,
        {"x": words, "W": randn(V, D)},
        ["W"],
        1,
        rng,
    )

    scores, targets = randn(N, T, V), rng.integers(0, V, size=(N, T))
    mask = rng.random((N, T)) > 0.3
    _, dscores = layers.temporal_softmax_loss(scores, targets, mask)
    numeric = eval_numerical_gradient(
        lambda s: layers.temporal_softmax_loss(s, targets, mask)[0], scores, STEP, POINTS
    )
    results.append(
        GradCheck("temporal_softmax_loss", "dx", rel_error(numeric, dscores), LOSS_TOLERANCE)
    )
    return results


def captioner_checks(seed: int = 0) -> list[GradCheck]:
    """Gradient checks of `NumpyCaptioner.loss` for every cell type, parameter by parameter."""
    rng = np.random.default_rng(seed)
    N, T, V, C, grid = 2, 5, 9, 6, (2, 2)
    results: list[GradCheck] = []
    for cell_type in CELL_TYPES:
        config = NumpyCaptionerConfig(
            vocab_size=V, input_dim=C, wordvec_dim=4, hidden_dim=5, cell_type=cell_type, seed=seed
        )
        model = NumpyCaptioner(config)
        shape = (N, C, *grid) if cell_type == "attn" else (N, C)
        features = rng.standard_normal(shape)
        captions = rng.integers(3, V, size=(N, T))
        captions[:, 0] = config.start_id
        captions[1, 3:] = config.pad_id  # a padded row
        _, grads = model.loss(features, captions)

        def loss(_: np.ndarray, model=model, features=features, captions=captions) -> float:
            return model.loss(features, captions)[0]

        for name in sorted(model.params):
            numeric = eval_numerical_gradient(loss, model.params[name], STEP, POINTS)
            error = rel_error(numeric, grads[name])
            results.append(
                GradCheck(f"NumpyCaptioner[{cell_type}].loss", f"d{name}", error, LOSS_TOLERANCE)
            )
    return results


def run_gradchecks(seed: int = 0) -> list[GradCheck]:
    """Every check of the NumPy reference: layers, then the captioner for each cell type."""
    return layer_checks(seed) + captioner_checks(seed)
