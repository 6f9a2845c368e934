"""NumPy RNN against centred differences and against torch.nn.RNN autograd in float64."""

import numpy as np
import pytest
import torch

from rnncap.numpy_ref import rnn_backward, rnn_forward, rnn_step_backward, rnn_step_forward
from rnncap.numpy_ref.checks import LAYER_TOLERANCE, check_layer

SHAPES = [(3, 4), (1, 4), (3, 1), (1, 1)]  # (N, T): includes N = 1 and T = 1
D, H = 5, 6


def make_inputs(rng, N, T):
    return {
        "x": rng.standard_normal((N, T, D)),
        "h0": rng.standard_normal((N, H)),
        "Wx": rng.standard_normal((D, H)) * 0.5,
        "Wh": rng.standard_normal((H, H)) * 0.5,
        "b": rng.standard_normal(H),
    }


def torch_rnn(Wx, Wh, b) -> torch.nn.RNN:
    """torch.nn.RNN holding the NumPy weights (it stores W.T and two biases)."""
    rnn = torch.nn.RNN(Wx.shape[0], Wx.shape[1], batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(Wx.T))
        rnn.weight_hh_l0.copy_(torch.from_numpy(Wh.T))
        rnn.bias_ih_l0.copy_(torch.from_numpy(b))
        rnn.bias_hh_l0.zero_()
    return rnn


@pytest.mark.parametrize("N,T", SHAPES)
def test_rnn_numerical_gradients(N, T):
    rng = np.random.default_rng(N * 10 + T)
    inputs = make_inputs(rng, N, T)
    for result in check_layer("rnn", rnn_forward, rnn_backward, inputs, list(inputs), 1, rng):
        assert result.error < LAYER_TOLERANCE, result
    step_inputs = {
        "x": inputs["x"][:, 0],
        "prev_h": inputs["h0"],
        "Wx": inputs["Wx"],
        "Wh": inputs["Wh"],
        "b": inputs["b"],
    }
    results = check_layer(
        "rnn_step", rnn_step_forward, rnn_step_backward, step_inputs, list(step_inputs), 1, rng
    )
    assert all(r.error < LAYER_TOLERANCE for r in results), results


@pytest.mark.parametrize("N,T", SHAPES)
def test_rnn_matches_torch_autograd(N, T):
    rng = np.random.default_rng(1)
    p = make_inputs(rng, N, T)
    dh = rng.standard_normal((N, T, H))
    h, cache = rnn_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])
    dx, dh0, dWx, dWh, db = rnn_backward(dh, cache)

    rnn = torch_rnn(p["Wx"], p["Wh"], p["b"])
    x = torch.tensor(p["x"], requires_grad=True)
    h0 = torch.tensor(p["h0"], requires_grad=True)
    h_torch, _ = rnn(x, h0[None])
    (h_torch * torch.from_numpy(dh)).sum().backward()

    close = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h, h_torch.detach().numpy(), **close)
    np.testing.assert_allclose(dx, x.grad.numpy(), **close)
    np.testing.assert_allclose(dh0, h0.grad.numpy(), **close)
    np.testing.assert_allclose(dWx, rnn.weight_ih_l0.grad.numpy().T, **close)
    np.testing.assert_allclose(dWh, rnn.weight_hh_l0.grad.numpy().T, **close)
    np.testing.assert_allclose(db, rnn.bias_ih_l0.grad.numpy(), **close)


def test_rnn_step_matches_torch_autograd():
    rng = np.random.default_rng(2)
    p = make_inputs(rng, 3, 1)
    x_np, dnext_h = p["x"][:, 0], rng.standard_normal((3, H))
    next_h, cache = rnn_step_forward(x_np, p["h0"], p["Wx"], p["Wh"], p["b"])
    dx, dprev_h, dWx, dWh, db = rnn_step_backward(dnext_h, cache)

    cell = torch.nn.RNNCell(D, H, dtype=torch.float64)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.from_numpy(p["Wx"].T))
        cell.weight_hh.copy_(torch.from_numpy(p["Wh"].T))
        cell.bias_ih.copy_(torch.from_numpy(p["b"]))
        cell.bias_hh.zero_()
    x = torch.tensor(x_np, requires_grad=True)
    prev_h = torch.tensor(p["h0"], requires_grad=True)
    out = cell(x, prev_h)
    (out * torch.from_numpy(dnext_h)).sum().backward()

    close = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(next_h, out.detach().numpy(), **close)
    np.testing.assert_allclose(dx, x.grad.numpy(), **close)
    np.testing.assert_allclose(dprev_h, prev_h.grad.numpy(), **close)
    np.testing.assert_allclose(dWx, cell.weight_ih.grad.numpy().T, **close)
    np.testing.assert_allclose(dWh, cell.weight_hh.grad.numpy().T, **close)
    np.testing.assert_allclose(db, cell.bias_ih.grad.numpy(), **close)


@pytest.mark.parametrize(
    "name,bad,message",
    [
        ("x", np.zeros((3, 4)), r"x: expected shape \(N, T, D\), got \(3, 4\)"),
        ("h0", np.zeros((3, 7)), r"h0: expected shape \(N, H\) = \(3, 6\), got \(3, 7\)"),
        ("x", np.zeros((3, 4, 7)), r"x: expected shape \(N, T, D\) = \(3, 4, 5\), got"),
        ("Wx", np.zeros(5), r"Wx: expected shape \(D, H\), got \(5,\)"),
        ("Wh", np.zeros((6, 5)), r"Wh: expected shape \(H, H\) = \(6, 6\), got \(6, 5\)"),
        ("b", np.zeros(5), r"b: expected shape \(H,\) = \(6,\), got \(5,\)"),
    ],
)
def test_rnn_wrong_shapes_raise(name, bad, message):
    inputs = make_inputs(np.random.default_rng(0), 3, 4)
    inputs[name] = bad
    with pytest.raises(ValueError, match=message):
        rnn_forward(**inputs)


def test_rnn_step_wrong_shape_names_argument():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"prev_h: expected shape \(N, H\) = \(2, 6\)"):
        rnn_step_forward(
            rng.standard_normal((2, D)),
            rng.standard_normal((3, H)),
            rng.standard_normal((D, H)),
            rng.standard_normal((H, H)),
            np.zeros(H),
        )
    _, cache = rnn_forward(**make_inputs(rng, 2, 3))
    with pytest.raises(ValueError, match=r"dh: expected shape \(N, 3, H\)"):
        rnn_backward(np.zeros((2, 4, H)), cache)
