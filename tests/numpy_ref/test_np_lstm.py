"""NumPy LSTM (gate order i, f, o, g) against centred differences and torch.nn.LSTM autograd."""

import numpy as np
import pytest
import torch

from rnncap.numpy_ref import lstm_backward, lstm_forward, lstm_step_backward, lstm_step_forward
from rnncap.numpy_ref.checks import LAYER_TOLERANCE, check_layer

SHAPES = [(3, 4), (1, 4), (3, 1), (1, 1)]  # (N, T)
D, H = 5, 6
CLOSE = dict(rtol=1e-10, atol=1e-12)


def ifog_to_ifgo(W: np.ndarray) -> np.ndarray:
    """Swap the o and g blocks of the last axis: NumPy i, f, o, g <-> torch i, f, g, o."""
    i, f, o, g = np.split(W, 4, axis=-1)
    return np.concatenate([i, f, g, o], axis=-1)


def copy_weights(module, Wx, Wh, b, suffix=""):
    """Load NumPy (Wx, Wh, b) into a torch LSTM/LSTMCell (which stores W.T in i, f, g, o order)."""
    with torch.no_grad():
        getattr(module, "weight_ih" + suffix).copy_(torch.from_numpy(ifog_to_ifgo(Wx).T))
        getattr(module, "weight_hh" + suffix).copy_(torch.from_numpy(ifog_to_ifgo(Wh).T))
        getattr(module, "bias_ih" + suffix).copy_(torch.from_numpy(ifog_to_ifgo(b)))
        getattr(module, "bias_hh" + suffix).zero_()


def weight_grads(module, suffix=""):
    """(dWx, dWh, db) in NumPy layout from a torch module's .grad fields."""
    grad = lambda name: getattr(module, name + suffix).grad.numpy()  # noqa: E731
    return (
        ifog_to_ifgo(grad("weight_ih").T),
        ifog_to_ifgo(grad("weight_hh").T),
        ifog_to_ifgo(grad("bias_ih")),
    )


def make_inputs(rng, N, T):
    return {
        "x": rng.standard_normal((N, T, D)),
        "h0": rng.standard_normal((N, H)),
        "Wx": rng.standard_normal((D, 4 * H)) * 0.5,
        "Wh": rng.standard_normal((H, 4 * H)) * 0.5,
        "b": rng.standard_normal(4 * H),
    }


@pytest.mark.parametrize("N,T", SHAPES)
def test_lstm_numerical_gradients(N, T):
    rng = np.random.default_rng(N * 10 + T)
    inputs = make_inputs(rng, N, T)
    results = check_layer("lstm", lstm_forward, lstm_backward, inputs, list(inputs), 1, rng)
    step_inputs = {
        "x": inputs["x"][:, 0],
        "prev_h": inputs["h0"],
        "prev_c": rng.standard_normal((N, H)),
        "Wx": inputs["Wx"],
        "Wh": inputs["Wh"],
        "b": inputs["b"],
    }
    results += check_layer(
        "lstm_step", lstm_step_forward, lstm_step_backward, step_inputs, list(step_inputs), 2, rng
    )
    assert all(r.error < LAYER_TOLERANCE for r in results), results


@pytest.mark.parametrize("N,T", SHAPES)
def test_lstm_matches_torch_lstm(N, T):
    rng = np.random.default_rng(3)
    p = make_inputs(rng, N, T)
    dh = rng.standard_normal((N, T, H))
    h, cache = lstm_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])
    dx, dh0, dWx, dWh, db = lstm_backward(dh, cache)

    lstm = torch.nn.LSTM(D, H, batch_first=True, dtype=torch.float64)
    copy_weights(lstm, p["Wx"], p["Wh"], p["b"], suffix="_l0")
    x = torch.tensor(p["x"], requires_grad=True)
    h0 = torch.tensor(p["h0"], requires_grad=True)
    h_torch, _ = lstm(x, (h0[None], torch.zeros(1, N, H, dtype=torch.float64)))  # c0 = 0
    (h_torch * torch.from_numpy(dh)).sum().backward()

    np.testing.assert_allclose(h, h_torch.detach().numpy(), **CLOSE)
    np.testing.assert_allclose(dx, x.grad.numpy(), **CLOSE)
    np.testing.assert_allclose(dh0, h0.grad.numpy(), **CLOSE)
    for ours, theirs in zip((dWx, dWh, db), weight_grads(lstm, "_l0"), strict=True):
        np.testing.assert_allclose(ours, theirs, **CLOSE)


def test_lstm_step_matches_torch_lstm_cell():
    rng = np.random.default_rng(4)
    N = 3
    p = make_inputs(rng, N, 1)
    prev_c_np = rng.standard_normal((N, H))
    dnext_h, dnext_c = rng.standard_normal((N, H)), rng.standard_normal((N, H))
    next_h, next_c, cache = lstm_step_forward(
        p["x"][:, 0], p["h0"], prev_c_np, p["Wx"], p["Wh"], p["b"]
    )
    dx, dprev_h, dprev_c, *dweights = lstm_step_backward(dnext_h, dnext_c, cache)

    cell = torch.nn.LSTMCell(D, H, dtype=torch.float64)
    copy_weights(cell, p["Wx"], p["Wh"], p["b"])
    x = torch.tensor(p["x"][:, 0], requires_grad=True)
    prev_h = torch.tensor(p["h0"], requires_grad=True)
    prev_c = torch.tensor(prev_c_np, requires_grad=True)
    h_t, c_t = cell(x, (prev_h, prev_c))
    ((h_t * torch.from_numpy(dnext_h)).sum() + (c_t * torch.from_numpy(dnext_c)).sum()).backward()

    np.testing.assert_allclose(next_h, h_t.detach().numpy(), **CLOSE)
    np.testing.assert_allclose(next_c, c_t.detach().numpy(), **CLOSE)
    np.testing.assert_allclose(dx, x.grad.numpy(), **CLOSE)
    np.testing.assert_allclose(dprev_h, prev_h.grad.numpy(), **CLOSE)
    np.testing.assert_allclose(dprev_c, prev_c.grad.numpy(), **CLOSE)
    for ours, theirs in zip(dweights, weight_grads(cell), strict=True):
        np.testing.assert_allclose(ours, theirs, **CLOSE)


def test_lstm_sigmoid_is_stable_for_large_inputs():
    rng = np.random.default_rng(5)
    p = make_inputs(rng, 2, 3)
    p["x"] *= 1e3  # saturates every gate: no overflow, finite outputs
    with np.errstate(over="raise", invalid="raise"):
        h, _ = lstm_forward(**p)
    assert np.isfinite(h).all()


@pytest.mark.parametrize(
    "name,bad,message",
    [
        ("Wx", np.zeros((5, 10)), r"Wx: expected shape \(D, 4H\) = \(5, \?\), got \(5, 10\)"),
        ("Wh", np.zeros((6, 6)), r"Wh: expected shape \(H, 4H\) = \(6, 24\), got \(6, 6\)"),
        ("b", np.zeros(6), r"b: expected shape \(4H,\) = \(24,\), got \(6,\)"),
        ("h0", np.zeros((2, 6)), r"h0: expected shape \(N, H\) = \(3, 6\), got \(2, 6\)"),
        ("x", np.zeros((3, 5)), r"x: expected shape \(N, T, D\), got \(3, 5\)"),
    ],
)
def test_lstm_wrong_shapes_raise(name, bad, message):
    inputs = make_inputs(np.random.default_rng(0), 3, 4)
    inputs[name] = bad
    with pytest.raises(ValueError, match=message):
        lstm_forward(**inputs)
