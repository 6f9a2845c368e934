"""The from-scratch RNN and LSTM against torch.nn.RNN / torch.nn.LSTM with copied weights: outputs
and every gradient, on CPU and CUDA, in float64, float32 and TF32 (the error checks written once,
parametrised over the cells)."""

from __future__ import annotations

import pytest
import torch

from rnncap.nn import LSTM, RNN
from rnncap.utils.device import cuda_math
from support.cuda import (
    SIZE,
    U_TF32,
    assert_all_close,
    assert_all_errors_like,
    assert_all_within_rounding,
)


def _run_rnn(device, dtype=torch.float32, N=3, T=5, D=4, H=6):
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
        [
            out_ref,
            x_ref.grad,
            h0_ref.grad,
            ref.weight_ih_l0.grad,
            ref.weight_hh_l0.grad,
            ref.bias_ih_l0.grad,
        ],
    )


def _run_lstm(device, dtype=torch.float32, N=3, T=5, D=4, H=6):
    """(ours, torch.nn) results [out, dx, dh0, dc0, dWx, dWh, db] in torch's layout (gate rows
    i, f, g, o), same weights."""
    torch.manual_seed(0)
    ref = torch.nn.LSTM(D, H, batch_first=True).to(device, dtype)
    ours = LSTM.from_torch(ref)
    assert ours.Wx.device == ref.weight_ih_l0.device and ours.Wx.dtype == dtype
    # drawn on the CPU in float32, so every device and dtype gets the same values
    shapes = ((N, T, D), (N, H), (N, H), (N, T, H))
    x, h0, c0, dout = (torch.randn(shape).to(device, dtype) for shape in shapes)

    inputs_ref = [t.clone().requires_grad_() for t in (x, h0, c0)]
    out_ref, _ = ref(inputs_ref[0], (inputs_ref[1][None], inputs_ref[2][None]))
    (out_ref * dout).sum().backward()

    inputs = [t.clone().requires_grad_() for t in (x, h0, c0)]
    out = ours(*inputs)
    (out * dout).sum().backward()
    # parameter gradients, mapped back to torch's layout (i, f, g, o rows)
    order = torch.cat(
        [torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)]
    )
    inv = torch.argsort(order).to(device)
    return (
        [
            out,
            *(t.grad for t in inputs),
            ours.Wx.grad.t()[inv],
            ours.Wh.grad.t()[inv],
            ours.b.grad[inv],
        ],
        [
            out_ref,
            *(t.grad for t in inputs_ref),
            ref.weight_ih_l0.grad,
            ref.weight_hh_l0.grad,
            ref.bias_ih_l0.grad,
        ],
    )


# cell -> (ours and torch.nn's results on a device and dtype, the names of those results)
CELLS = {
    "rnn": (_run_rnn, ["out", "dx", "dh0", "dWx", "dWh", "db"]),
    "lstm": (_run_lstm, ["out", "dx", "dh0", "dc0", "dWx", "dWh", "db"]),
}


@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch_nn_cpu(cell):
    run, names = CELLS[cell]
    assert_all_close(names, *run("cpu"), tol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch_nn_cuda_float64(cell):
    # cuDNN runs float64 RNNs and LSTMs in float64: the two must agree to float64 rounding.
    run, names = CELLS[cell]
    assert_all_close(names, *run("cuda", torch.float64), tol=1e-10)


@pytest.mark.gpu
@pytest.mark.parametrize("cell", CELLS)
def test_float32_cuda_error_is_like_torch_nn(cell):
    """Ours and torch.nn (cuDNN) in float32, both against the float64 CPU result."""
    run, names = CELLS[cell]
    ours64, _ = run("cpu", torch.float64, **SIZE)
    with cuda_math(tf32=False):
        ours, ref = run("cuda", **SIZE)
    assert_all_errors_like(names, ours, ref, ours64)


@pytest.mark.gpu
@pytest.mark.parametrize("cell", CELLS)
def test_tf32_error_is_within_tf32_rounding(cell):
    """With TF32 allowed (a training option), both are off by TF32's rounding size, no more."""
    run, names = CELLS[cell]
    ours64, _ = run("cpu", torch.float64, **SIZE)
    with cuda_math(tf32=True):
        ours, ref = run("cuda", **SIZE)
    assert_all_within_rounding(names, ours, ref, ours64, U_TF32)


@pytest.mark.parametrize("cell", CELLS)
def test_error_check_on_cpu(cell):
    """The float32-against-float64 check itself, on CPU (oneDNN's cells as torch.nn)."""
    run, names = CELLS[cell]
    ours64, _ = run("cpu", torch.float64, **SIZE)
    ours, ref = run("cpu", **SIZE)
    assert_all_errors_like(names, ours, ref, ours64)
