"""The from-scratch RNN: its step against its forward, numerical gradients and NumPy (against
torch.nn.RNN with copied weights: test_recurrent_parity.py)."""

from __future__ import annotations

import pytest
import torch

from rnncap.nn import RNN


def test_step_matches_forward():
    torch.manual_seed(1)
    ref = torch.nn.RNN(3, 4, batch_first=True)
    ours = RNN.from_torch(ref)
    x = torch.randn(2, 4, 3)
    expected, _ = ref(x)
    h = torch.zeros(2, 4)
    steps = []
    for t in range(4):
        h = ours.step(x[:, t], h)
        steps.append(h)
    torch.testing.assert_close(torch.stack(steps, 1), expected, atol=1e-6, rtol=1e-5)


def test_gradcheck_float64():
    torch.manual_seed(2)
    rnn = RNN(3, 4).double()

    def f(x, h0, Wx, Wh, b):
        params = {"Wx": Wx, "Wh": Wh, "b": b}
        return torch.func.functional_call(rnn, params, (x, h0))

    x = torch.randn(2, 3, 3, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(2, 4, dtype=torch.double, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in (rnn.Wx, rnn.Wh, rnn.b)]
    assert torch.autograd.gradcheck(f, (x, h0, *params))


def test_numpy_reference_float64():
    rnn_ref = pytest.importorskip("rnncap.numpy_ref.rnn")
    import numpy as np

    rng = np.random.default_rng(3)
    N, T, D, H = 3, 4, 5, 6
    x, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
    Wx, Wh = rng.standard_normal((D, H)) * 0.3, rng.standard_normal((H, H)) * 0.3
    b, dout = rng.standard_normal(H), rng.standard_normal((N, T, H))
    h_ref, cache = rnn_ref.rnn_forward(x, h0, Wx, Wh, b)
    dx_ref, dh0_ref, dWx_ref, dWh_ref, db_ref = rnn_ref.rnn_backward(dout, cache)

    ours = RNN.from_numpy(Wx, Wh, b)
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    out = ours(xt, h0t)
    (out * torch.tensor(dout)).sum().backward()
    for got, want in [
        (out, h_ref),
        (xt.grad, dx_ref),
        (h0t.grad, dh0_ref),
        (ours.Wx.grad, dWx_ref),
        (ours.Wh.grad, dWh_ref),
        (ours.b.grad, db_ref),
    ]:
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=0, atol=1e-10)


def test_from_torch_rejects_relu():
    with pytest.raises(ValueError):
        RNN.from_torch(torch.nn.RNN(3, 4, batch_first=True, nonlinearity="relu"))
