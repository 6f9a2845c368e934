"""The from-scratch RNN against torch.nn.RNN (copied weights), numerical gradients and NumPy."""

from __future__ import annotations

import pytest
import torch

from cuda_helpers import (
    SIZE,
    U_TF32,
    assert_all_close,
    assert_all_errors_like,
    assert_all_within_rounding,
)
from rnncap.nn import RNN
from rnncap.utils.device import cuda_math


def _run_both(device, dtype=torch.float32, N=3, T=5, D=4, H=6):
    """(ours, torch.nn) results [out, dx, dh0, dWx, dWh, db] in torch's layout, same weights."""
    torch.manual_seed(0)
    ref = torch.nn.RNN(D, H, batch_first=True).to(device, dtype)
    ours = RNN.from_torch(ref)
    assert ours.Wx.device == ref.weight_ih_l0.device and ours.Wx.dtype == dtype
    # drawn on the CPU in float32, so every device and dtype gets the same values
    x, h0, dout = (torch.randn(shape).to(device, dtype) for shape in ((N, T, D), (N, H), (N, T, H)))

    x_ref, h0_ref = x.clone().requires_grad_(), h0.clone().requires_grad_()
    out_ref, _ = ref(x_ref, h0_ref[None])
    (out_ref * dout).sum().backward()

    xs, h0s = x.clone().requires_grad_(), h0.clone().requires_grad_()
    out = ours(xs, h0s)
    (out * dout).sum().backward()
    return (
        [out, xs.grad, h0s.grad, ours.Wx.grad.t(), ours.Wh.grad.t(), ours.b.grad],
        [out_ref, x_ref.grad, h0_ref.grad, ref.weight_ih_l0.grad, ref.weight_hh_l0.grad,
         ref.bias_ih_l0.grad],
    )  # fmt: skip


NAMES = ["out", "dx", "dh0", "dWx", "dWh", "db"]


def test_matches_torch_rnn_cpu():
    assert_all_close(NAMES, *_run_both("cpu"), tol=1e-5)


@pytest.mark.gpu
def test_matches_torch_rnn_cuda_float64():
    # cuDNN runs float64 RNNs in float64: the two must agree to float64 rounding.
    assert_all_close(NAMES, *_run_both("cuda", torch.float64), tol=1e-10)


@pytest.mark.gpu
def test_float32_cuda_error_is_like_torch_nn():
    """Ours and torch.nn (cuDNN) in float32, both against the float64 CPU result."""
    ours64, _ = _run_both("cpu", torch.float64, **SIZE)
    with cuda_math(tf32=False):
        ours, ref = _run_both("cuda", **SIZE)
    assert_all_errors_like(NAMES, ours, ref, ours64)


@pytest.mark.gpu
def test_tf32_error_is_within_tf32_rounding():
    """With TF32 allowed (a training option), both are off by TF32's rounding size, no more."""
    ours64, _ = _run_both("cpu", torch.float64, **SIZE)
    with cuda_math(tf32=True):
        ours, ref = _run_both("cuda", **SIZE)
    assert_all_within_rounding(NAMES, ours, ref, ours64, U_TF32)


def test_error_check_on_cpu():
    """The float32-against-float64 check itself, on CPU (oneDNN's RNN as torch.nn)."""
    ours64, _ = _run_both("cpu", torch.float64, **SIZE)
    ours, ref = _run_both("cpu", **SIZE)
    assert_all_errors_like(NAMES, ours, ref, ours64)


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
    for got, want in [(out, h_ref), (xt.grad, dx_ref), (h0t.grad, dh0_ref),
                      (ours.Wx.grad, dWx_ref), (ours.Wh.grad, dWh_ref), (ours.b.grad, db_ref)]:
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=0, atol=1e-10)


def test_from_torch_rejects_relu():
    with pytest.raises(ValueError):
        RNN.from_torch(torch.nn.RNN(3, 4, batch_first=True, nonlinearity="relu"))
