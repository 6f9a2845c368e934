"""The from-scratch LSTM: its step against its forward, numerical gradients and NumPy (against
torch.nn.LSTM with copied weights: test_recurrent_parity.py)."""

from __future__ import annotations

import pytest
import torch

from rnncap.nn import LSTM


def test_step_matches_forward():
    torch.manual_seed(1)
    ref = torch.nn.LSTM(3, 4, batch_first=True)
    ours = LSTM.from_torch(ref)
    x = torch.randn(2, 4, 3)
    expected, _ = ref(x)
    h = c = torch.zeros(2, 4)
    steps = []
    for t in range(4):
        h, c = ours.step(x[:, t], h, c)
        steps.append(h)
    torch.testing.assert_close(torch.stack(steps, 1), expected, atol=1e-6, rtol=1e-5)


def test_gradcheck_float64():
    torch.manual_seed(2)
    lstm = LSTM(3, 4).double()
    x = torch.randn(2, 3, 3, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(2, 4, dtype=torch.double, requires_grad=True)
    c0 = torch.randn(2, 4, dtype=torch.double, requires_grad=True)

    def f(x, h0, c0, Wx, Wh, b):
        params = {"Wx": Wx, "Wh": Wh, "b": b}
        return torch.func.functional_call(lstm, params, (x, h0, c0))

    params = [p.detach().clone().requires_grad_() for p in (lstm.Wx, lstm.Wh, lstm.b)]
    assert torch.autograd.gradcheck(f, (x, h0, c0, *params))


def test_numpy_reference_float64():
    lstm_ref = pytest.importorskip("rnncap.numpy_ref.lstm")
    import numpy as np

    rng = np.random.default_rng(3)
    N, T, D, H = 3, 4, 5, 6
    x, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
    Wx, Wh = rng.standard_normal((D, 4 * H)) * 0.3, rng.standard_normal((H, 4 * H)) * 0.3
    b, dout = rng.standard_normal(4 * H), rng.standard_normal((N, T, H))
    h_ref, cache = lstm_ref.lstm_forward(x, h0, Wx, Wh, b)
    dx_ref, dh0_ref, dWx_ref, dWh_ref, db_ref = lstm_ref.lstm_backward(dout, cache)

    ours = LSTM.from_numpy(Wx, Wh, b)
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    out = ours(xt, h0t)  # c0 = 0 as in the reference
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


def test_from_torch_rejects_unsupported():
    with pytest.raises(ValueError):
        LSTM.from_torch(torch.nn.LSTM(3, 4))  # batch_first=False


def test_autocast_runs_the_recurrence_in_float32():
    torch.manual_seed(4)
    ref = torch.nn.LSTM(3, 4, batch_first=True)
    ours = LSTM.from_torch(ref)
    x = torch.randn(2, 3, 3)
    expected, _ = ref(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ours(x.bfloat16())
        out.sum().backward()
    assert out.dtype == torch.float32 and ours.Wx.grad.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=2e-2, rtol=0)  # x was rounded to bfloat16
