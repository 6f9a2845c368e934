"""NumPy attention and attention LSTM against centred differences and torch autograd (float64).

The torch references are torch's own scaled_dot_product_attention and nn.LSTMCell: the attention
LSTM's gates `x Wx + prev_h Wh + context Wattn + b` are an LSTMCell fed with [x, context].
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnncap.numpy_ref import (
    attention_backward,
    attention_forward,
    attention_lstm_backward,
    attention_lstm_forward,
    attention_lstm_step_backward,
    attention_lstm_step_forward,
)
from rnncap.numpy_ref.checks import LAYER_TOLERANCE, check_layer

SHAPES = [(3, 4), (1, 4), (3, 1), (1, 1)]  # (N, T)
D, H, P = 5, 6, 4
CLOSE = dict(rtol=1e-10, atol=1e-12)


def ifog_to_ifgo(W: np.ndarray) -> np.ndarray:
    """Swap the o and g blocks of the last axis: NumPy i, f, o, g <-> torch i, f, g, o."""
    i, f, o, g = np.split(W, 4, axis=-1)
    return np.concatenate([i, f, g, o], axis=-1)


def make_inputs(rng, N, T):
    return {
        "x": rng.standard_normal((N, T, D)),
        "A": rng.standard_normal((N, H, P)),
        "Wx": rng.standard_normal((D, 4 * H)) * 0.5,
        "Wh": rng.standard_normal((H, 4 * H)) * 0.5,
        "Wattn": rng.standard_normal((H, 4 * H)) * 0.5,
        "b": rng.standard_normal(4 * H),
    }


def torch_context(prev_h: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """torch's scaled dot-product attention: query prev_h (N, H), keys = values = A (N, H, P)."""
    kv = A.transpose(1, 2)  # (N, P, H)
    return F.scaled_dot_product_attention(prev_h[:, None], kv, kv)[:, 0]  # (N, H)


def torch_cell(p) -> torch.nn.LSTMCell:
    """An LSTMCell over [x, context] holding the NumPy weights."""
    cell = torch.nn.LSTMCell(D + H, H, dtype=torch.float64)
    with torch.no_grad():
        W_in = np.concatenate([p["Wx"], p["Wattn"]], axis=0)  # (D + H, 4H)
        cell.weight_ih.copy_(torch.from_numpy(ifog_to_ifgo(W_in).T))
        cell.weight_hh.copy_(torch.from_numpy(ifog_to_ifgo(p["Wh"]).T))
        cell.bias_ih.copy_(torch.from_numpy(ifog_to_ifgo(p["b"])))
        cell.bias_hh.zero_()
    return cell


def cell_grads(cell):
    """(dWx, dWh, dWattn, db) in NumPy layout from the cell's .grad fields."""
    dW_in = ifog_to_ifgo(cell.weight_ih.grad.numpy().T)  # (D + H, 4H)
    return (
        dW_in[:D],
        ifog_to_ifgo(cell.weight_hh.grad.numpy().T),
        dW_in[D:],
        ifog_to_ifgo(cell.bias_ih.grad.numpy()),
    )


@pytest.mark.parametrize("N", [3, 1])
def test_attention_matches_torch_sdpa(N):
    rng = np.random.default_rng(N)
    prev_h_np, A_np = rng.standard_normal((N, H)), rng.standard_normal((N, H, P))
    dcontext = rng.standard_normal((N, H))
    context, weights, cache = attention_forward(prev_h_np, A_np)
    dprev_h, dA = attention_backward(dcontext, cache)

    prev_h = torch.tensor(prev_h_np, requires_grad=True)
    A = torch.tensor(A_np, requires_grad=True)
    context_torch = torch_context(prev_h, A)
    (context_torch * torch.from_numpy(dcontext)).sum().backward()
    scores = torch.bmm(prev_h.detach()[:, None], A.detach())[:, 0] / H**0.5  # (N, P)

    np.testing.assert_allclose(context, context_torch.detach().numpy(), **CLOSE)
    np.testing.assert_allclose(weights, torch.softmax(scores, dim=1).numpy(), **CLOSE)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    np.testing.assert_allclose(dprev_h, prev_h.grad.numpy(), **CLOSE)
    np.testing.assert_allclose(dA, A.grad.numpy(), **CLOSE)


@pytest.mark.parametrize("N,T", SHAPES)
def test_attention_numerical_gradients(N, T):
    rng = np.random.default_rng(N * 10 + T)
    inputs = make_inputs(rng, N, T)
    results = check_layer(
        "attention_lstm",
        attention_lstm_forward,
        attention_lstm_backward,
        inputs,
        list(inputs),
        1,
        rng,
    )
    step_inputs = {
        "x": inputs["x"][:, 0],
        "prev_h": rng.standard_normal((N, H)),
        "prev_c": rng.standard_normal((N, H)),
        "A": inputs["A"],
        "Wx": inputs["Wx"],
        "Wh": inputs["Wh"],
        "Wattn": inputs["Wattn"],
        "b": inputs["b"],
    }
    results += check_layer(
        "attention_lstm_step",
        attention_lstm_step_forward,
        attention_lstm_step_backward,
        step_inputs,
        list(step_inputs),
        2,
        rng,
    )
    attn_inputs = {"prev_h": step_inputs["prev_h"], "A": inputs["A"]}
    results += check_layer(
        "attention", attention_forward, attention_backward, attn_inputs, list(attn_inputs), 1, rng
    )
    assert all(r.error < LAYER_TOLERANCE for r in results), results


def test_attention_lstm_step_matches_torch():
    rng = np.random.default_rng(7)
    N = 3
    p = make_inputs(rng, N, 1)
    prev_h_np, prev_c_np = rng.standard_normal((N, H)), rng.standard_normal((N, H))
    dnext_h, dnext_c = rng.standard_normal((N, H)), rng.standard_normal((N, H))
    next_h, next_c, weights, cache = attention_lstm_step_forward(
        p["x"][:, 0], prev_h_np, prev_c_np, p["A"], p["Wx"], p["Wh"], p["Wattn"], p["b"]
    )
    dx, dprev_h, dprev_c, dA, *dweights = attention_lstm_step_backward(dnext_h, dnext_c, cache)

    cell = torch_cell(p)
    x = torch.tensor(p["x"][:, 0], requires_grad=True)
    prev_h = torch.tensor(prev_h_np, requires_grad=True)
    prev_c = torch.tensor(prev_c_np, requires_grad=True)
    A = torch.tensor(p["A"], requires_grad=True)
    h_t, c_t = cell(torch.cat([x, torch_context(prev_h, A)], dim=1), (prev_h, prev_c))
    ((h_t * torch.from_numpy(dnext_h)).sum() + (c_t * torch.from_numpy(dnext_c)).sum()).backward()

    np.testing.assert_allclose(next_h, h_t.detach().numpy(), **CLOSE)
    np.testing.assert_allclose(next_c, c_t.detach().numpy(), **CLOSE)
    for ours, theirs in zip((dx, dprev_h, dprev_c, dA), (x, prev_h, prev_c, A), strict=True):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), **CLOSE)
    for ours, theirs in zip(dweights, cell_grads(cell), strict=True):
        np.testing.assert_allclose(ours, theirs, **CLOSE)


@pytest.mark.parametrize("N,T", SHAPES)
def test_attention_lstm_matches_torch(N, T):
    rng = np.random.default_rng(8)
    p = make_inputs(rng, N, T)
    dh = rng.standard_normal((N, T, H))
    h, weights, cache = attention_lstm_forward(**p)
    dx, dA, *dweights = attention_lstm_backward(dh, cache)

    cell = torch_cell(p)
    x = torch.tensor(p["x"], requires_grad=True)
    A = torch.tensor(p["A"], requires_grad=True)
    h_t = c_t = A.mean(dim=2)  # h0 = c0 = mean over the grid
    outputs = []
    for t in range(T):
        h_t, c_t = cell(torch.cat([x[:, t], torch_context(h_t, A)], dim=1), (h_t, c_t))
        outputs.append(h_t)
    h_torch = torch.stack(outputs, dim=1)  # (N, T, H)
    (h_torch * torch.from_numpy(dh)).sum().backward()

    assert weights.shape == (N, T, P)
    np.testing.assert_allclose(weights.sum(axis=2), 1.0)
    np.testing.assert_allclose(h, h_torch.detach().numpy(), **CLOSE)
    np.testing.assert_allclose(dx, x.grad.numpy(), **CLOSE)
    np.testing.assert_allclose(dA, A.grad.numpy(), **CLOSE)
    for ours, theirs in zip(dweights, cell_grads(cell), strict=True):
        np.testing.assert_allclose(ours, theirs, **CLOSE)


@pytest.mark.parametrize(
    "name,bad,message",
    [
        ("A", np.zeros((3, 6)), r"A: expected shape \(N, H, P\), got \(3, 6\)"),
        ("A", np.zeros((3, 5, 4)), r"A: expected shape \(N, H, P\) = \(3, 6, 4\), got \(3, 5, 4\)"),
        ("Wattn", np.zeros((5, 24)), r"Wattn: expected shape \(H, 4H\) = \(6, 24\), got \(5, 24\)"),
        ("x", np.zeros((2, 4, 5)), r"A: expected shape \(N, H, P\) = \(2, 6, 4\), got \(3, 6, 4\)"),
    ],
)
def test_attention_lstm_wrong_shapes_raise(name, bad, message):
    inputs = make_inputs(np.random.default_rng(0), 3, 4)
    inputs[name] = bad
    with pytest.raises(ValueError, match=message):
        attention_lstm_forward(**inputs)


def test_attention_wrong_shape_names_argument():
    with pytest.raises(
        ValueError, match=r"A: expected shape \(N, H, P\) = \(2, 6, 4\), got \(2, 5, 4\)"
    ):
        attention_forward(np.zeros((2, 6)), np.zeros((2, 5, 4)))
