"""An LSTM layer written from scratch: one autograd Function with a hand-written backward.

Parameters follow the NumPy reference: `Wx` (D, 4H), `Wh` (H, 4H), `b` (4H,), gate order i, f, o, g.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from rnncap.nn.graphs import LoopGraphs, use_graphs


def lstm_cell_update(a: Tensor, prev_c: Tensor) -> tuple[Tensor, Tensor]:
    """The LSTM gate maths of one step: pre-activations a (N, 4H), prev_c (N, H) -> (h, c).

    Gate order i, f, o, g: i, f, o = sigmoid, g = tanh; c = f * prev_c + i * g; h = o * tanh(c).
    Shared by `LSTM.step` and `AttentionLSTM` (the sequence Function fuses it in place).
    """
    H = prev_c.shape[1]
    ifo = torch.sigmoid(a[:, : 3 * H])
    i, f, o = ifo[:, :H], ifo[:, H : 2 * H], ifo[:, 2 * H :]
    g = torch.tanh(a[:, 3 * H :])
    next_c = f * prev_c + i * g
    next_h = o * torch.tanh(next_c)
    return next_h, next_c


class _LSTMFunction(torch.autograd.Function):
    """The whole sequence as one autograd node.

    Forward does one input projection for all timesteps, then per step one matmul and the gate
    maths, keeping the activated gates, the cells and tanh of the cells. Backward first computes,
    for all timesteps at once, every factor that does not depend on the incoming gradient, so the
    reverse loop is one matmul and five elementwise operations per step; the weight and input
    gradients are then one matmul each over all N*T positions. With `graphs` (CUDA only) the two
    time loops are replayed as recorded CUDA graphs instead of launched kernel by kernel.
    """

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        h0: Tensor,
        c0: Tensor,
        Wx: Tensor,
        Wh: Tensor,
        b: Tensor,
        graphs: LoopGraphs | None = None,
    ):
        N, T, D = x.shape
        H = Wh.shape[0]
        x_tm = x.transpose(0, 1).reshape(T * N, D)  # time-major rows, so each step is contiguous
        if graphs is None:
            # pre-activations of every step, turned in place into the activated i, f, o, g
            gates = torch.mm(x_tm, Wx).view(T, N, 4 * H)  # (T, N, 4H)
            cells = x.new_empty(T, N, H)  # c_t
            tanh_cells = x.new_empty(T, N, H)  # tanh(c_t)
            hs = x.new_empty(T, N, H)  # h_t, time-major so that every step writes contiguous rows
            _forward_loop(gates, h0, c0, Wh, b, cells, tanh_cells, hs)
        else:
            make = lambda: _forward_buffers(x, T, N, H)  # noqa: E731
            run = graphs.get(("forward", T, N, H, x.dtype, x.device), make, _forward_loop)
            buf = run.buffers
            torch.mm(x_tm, Wx, out=buf["gates"].view(T * N, 4 * H))
            for name, value in (("h0", h0), ("c0", c0), ("Wh", Wh), ("b", b)):
                buf[name].copy_(value)
            run.replay()
            # the graph's buffers are overwritten by the next call: keep copies for backward
            gates, cells, tanh_cells, hs = (
                buf[k].clone() for k in ("gates", "cells", "tanh_cells", "hs")
            )
        ctx.save_for_backward(x_tm, h0, c0, Wx, Wh, gates, cells, tanh_cells, hs)
        ctx.graphs = graphs
        return hs.transpose(0, 1)  # (N, T, H) view

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs: Tensor):
        x_tm, h0, c0, Wx, Wh, gates, cells, tanh_cells, hs = ctx.saved_tensors
        graphs = ctx.graphs
        T, N, H = cells.shape
        D = x_tm.shape[1]
        G = gates.view(T, N, 4, H)
        if graphs is None:
            K, Kc = torch.empty_like(G), torch.empty_like(cells)
            _backward_factors(G, cells, tanh_cells, c0, K, Kc)
            dA = K.new_empty(T, N, 4, H)  # gradient of the pre-activations, time-major
            dh, dc = _backward_loop(K, Kc, G[:, :, 1], dhs, Wh, dA)
        else:
            make = lambda: _backward_buffers(cells)  # noqa: E731
            key = ("backward", T, N, H, cells.dtype, cells.device)
            run = graphs.get(key, make, _backward_graphed)
            buf = run.buffers
            _backward_factors(G, cells, tanh_cells, c0, buf["K"], buf["Kc"])
            for name, value in (("f", G[:, :, 1]), ("dhs", dhs), ("Wh", Wh)):
                buf[name].copy_(value)
            run.replay()
            dA, dh, dc = buf["dA"], buf["dh"].clone(), buf["dc"].clone()  # dA is used up below
        dA2 = dA.view(T * N, 4 * H)
        needs = ctx.needs_input_grad
        dx = torch.mm(dA2, Wx.t()).view(T, N, D).transpose(0, 1) if needs[0] else None
        dWx = dWh = None
        if needs[3] or needs[4]:
            # dWx and dWh in one GEMM (one read of dA): [x_t, h_{t-1}] for every position
            xh = x_tm.new_empty(T, N, D + H)
            xh[:, :, :D] = x_tm.view(T, N, D)
            xh[0, :, D:] = h0
            xh[1:, :, D:] = hs[:-1]
            dW = torch.mm(xh.view(T * N, D + H).t(), dA2)  # (D + H, 4H)
            dWx, dWh = dW[:D], dW[D:]
        db = dA2.sum(0) if needs[5] else None
        return dx, dh, dc, dWx, dWh, db, None


def _forward_loop(gates, h0, c0, Wh, b, cells, tanh_cells, hs) -> None:
    """The recurrence: gates (T, N, 4H) hold x_t Wx and become the activated i, f, o, g in
    place; cells, tanh_cells and hs (T, N, H) receive c_t, tanh(c_t) and h_t."""
    T, N, H = cells.shape
    h, c = h0, c0
    recurrent = gates.new_empty(N, 4 * H)  # h_{t-1} Wh, one reused buffer
    for t in range(T):
        # A plain product into a fresh buffer runs at full GEMM speed (beta = 0); an in-place
        # addmm_ into the gates measured about 20% slower per step. The bias is added per step:
        # addmm's broadcast copy of it over all T*N rows cost more.
        g = gates[t].add_(torch.mm(h, Wh, out=recurrent)).add_(b)  # (N, 4H)
        g[:, : 3 * H].sigmoid_()
        g[:, 3 * H :].tanh_()
        i, f, o, gg = g[:, :H], g[:, H : 2 * H], g[:, 2 * H : 3 * H], g[:, 3 * H :]
        c = torch.mul(f, c, out=cells[t]).addcmul_(i, gg)  # f*c + i*g
        h = torch.mul(o, torch.tanh(c, out=tanh_cells[t]), out=hs[t])


def _backward_factors(G, cells, tanh_cells, c0, K, Kc) -> None:
    """Every factor of the backward pass that does not depend on the incoming gradient, for all
    timesteps at once: K (T, N, 4, H) and Kc (T, N, H), written in place."""
    i, f, o, g = G.unbind(2)  # each (T, N, H)
    # da = [dc * g * i(1-i), dc * c_prev * f(1-f), dh * tanh(c) * o(1-o), dc * i * (1-g^2)]
    sig = G[:, :, :3]
    torch.addcmul(sig, sig, sig, value=-1, out=K[:, :, :3])  # sigmoid' = s - s^2, one pass
    K[:, :, 0] *= g
    K[1:, :, 1] *= cells[:-1]  # c_{t-1}, without materialising the shifted copy
    K[0, :, 1] *= c0
    K[:, :, 2] *= tanh_cells
    torch.addcmul(i, i * g, g, value=-1, out=K[:, :, 3])  # i tanh'(.) = i - i g^2
    torch.addcmul(o, o * tanh_cells, tanh_cells, value=-1, out=Kc)  # dc/dh = o (1 - tanh(c)^2)


def _backward_loop(K, Kc, f, dhs, Wh, dA):
    """The reverse recurrence: one matmul and five elementwise operations per step.

    f (T, N, H) the forget gates, dhs (N, T, H) the incoming gradient; fills dA (T, N, 4, H)
    and returns the gradients of h0 and c0, each (N, H).
    """
    T, N, H = Kc.shape
    WhT = Wh.t()
    dh = dhs[:, T - 1]
    dc = None
    recurrent = dA.new_empty(N, H)  # dA_t Wh^T, one reused buffer (see the forward loop)
    for t in range(T - 1, -1, -1):
        dc = dh * Kc[t] if dc is None else torch.addcmul(dc, dh, Kc[t])
        da = dA[t]  # (N, 4, H)
        torch.mul(K[t, :, :2], dc.unsqueeze(1), out=da[:, :2])
        torch.mul(K[t, :, 2], dh, out=da[:, 2])
        torch.mul(K[t, :, 3], dc, out=da[:, 3])
        dc = dc * f[t]
        da = da.view(N, 4 * H)
        dh = torch.mm(da, WhT, out=recurrent)
        if t > 0:
            dh = dh.add_(dhs[:, t - 1])
    return dh, dc


# --------------------------------------------------------------------------- CUDA graphs
def _forward_buffers(x: Tensor, T: int, N: int, H: int) -> dict[str, Tensor]:
    shapes = {
        "gates": (T, N, 4 * H),
        "h0": (N, H),
        "c0": (N, H),
        "Wh": (H, 4 * H),
        "b": (4 * H,),
        "cells": (T, N, H),
        "tanh_cells": (T, N, H),
        "hs": (T, N, H),
    }
    return {name: x.new_zeros(shape) for name, shape in shapes.items()}


def _backward_buffers(cells: Tensor) -> dict[str, Tensor]:
    T, N, H = cells.shape
    shapes = {
        "K": (T, N, 4, H),
        "Kc": (T, N, H),
        "f": (T, N, H),
        "dhs": (N, T, H),
        "Wh": (H, 4 * H),
        "dA": (T, N, 4, H),
        "dh": (N, H),
        "dc": (N, H),
    }
    return {name: cells.new_zeros(shape) for name, shape in shapes.items()}


def _backward_graphed(K, Kc, f, dhs, Wh, dA, dh, dc) -> None:
    """`_backward_loop` with its two results written into fixed buffers (for recording)."""
    dh_, dc_ = _backward_loop(K, Kc, f, dhs, Wh, dA)
    dh.copy_(dh_)
    dc.copy_(dc_)


class LSTM(nn.Module):
    """Single-layer, batch-first LSTM: `forward(x (N, T, D)) -> h (N, T, H)`.

    Setting `cuda_graphs = True` replays the time loops of `forward` and its backward as CUDA
    graphs recorded once per (N, T) shape, on CUDA inputs only (see `rnncap.nn.graphs`).
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.cuda_graphs = False  # opt-in; ignored on CPU
        self._graphs: LoopGraphs | None = None
        self.Wx = nn.Parameter(torch.empty(input_size, 4 * hidden_size))
        self.Wh = nn.Parameter(torch.empty(hidden_size, 4 * hidden_size))
        self.b = nn.Parameter(torch.empty(4 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) like torch.nn.LSTM."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.Wx, self.Wh, self.b):
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor, h0: Tensor | None = None, c0: Tensor | None = None) -> Tensor:
        """All hidden states (N, T, H) for inputs x (N, T, D); h0, c0 (N, H) default to zeros."""
        N = x.shape[0]
        if h0 is None:
            h0 = self.Wh.new_zeros(N, self.hidden_size)
        if c0 is None:
            c0 = self.Wh.new_zeros(N, self.hidden_size)
        # The hand-written Function computes in the parameters' dtype: under autocast the
        # recurrence stays in float32 (the cell state accumulates over time).
        dtype = self.Wx.dtype
        graphs = None
        if use_graphs(self.cuda_graphs, x, self.Wx):
            graphs = self._graphs = self._graphs or LoopGraphs()
        with torch.autocast(x.device.type, enabled=False):
            return _LSTMFunction.apply(
                x.to(dtype), h0.to(dtype), c0.to(dtype), self.Wx, self.Wh, self.b, graphs
            )

    def step(self, x: Tensor, prev_h: Tensor, prev_c: Tensor) -> tuple[Tensor, Tensor]:
        """One timestep: x (N, D), prev_h/prev_c (N, H) -> (next_h, next_c), each (N, H)."""
        return self.step_from_input(self.input_term(x), prev_h, prev_c)

    def input_term(self, x: Tensor) -> Tensor:
        """x Wx + b, the input's share of the gates: x (N, D) -> (N, 4H)."""
        return torch.addmm(self.b, x, self.Wx)

    def step_from_input(self, xw: Tensor, prev_h: Tensor, prev_c: Tensor):
        """`step` given xw = `input_term(x)` (N, 4H), e.g. looked up per word while decoding."""
        return lstm_cell_update(xw + prev_h @ self.Wh, prev_c)  # gates (N, 4H)

    @classmethod
    def from_torch(cls, m: nn.Module) -> LSTM:
        """An equivalent LSTM from a single-layer, batch-first `torch.nn.LSTM` with bias.

        torch stores gates i, f, g, o in `weight_ih` (4H, D); here they are i, f, o, g in
        Wx (D, 4H), and the two torch biases are summed.
        """
        if m.num_layers != 1 or not m.batch_first or not m.bias or m.bidirectional:
            raise ValueError("from_torch needs a single-layer, batch_first, biased, 1-way LSTM")
        if getattr(m, "proj_size", 0):
            raise ValueError("from_torch does not support proj_size")
        H = m.hidden_size
        order = torch.cat(
            [torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)]
        )  # i, f, o, g from i, f, g, o
        w_ih, w_hh = m.weight_ih_l0.detach(), m.weight_hh_l0.detach()
        bias = (m.bias_ih_l0 + m.bias_hh_l0).detach()
        out = cls(m.input_size, H).to(device=w_ih.device, dtype=w_ih.dtype)
        with torch.no_grad():
            out.Wx.copy_(w_ih[order].t())
            out.Wh.copy_(w_hh[order].t())
            out.b.copy_(bias[order])
        return out

    @classmethod
    def from_numpy(cls, Wx, Wh, b) -> LSTM:
        """An LSTM holding copies of NumPy Wx (D, 4H), Wh (H, 4H), b (4H,) (dtype kept)."""
        D, H4 = Wx.shape
        out = cls(D, H4 // 4)
        out.Wx = nn.Parameter(torch.tensor(Wx))
        out.Wh = nn.Parameter(torch.tensor(Wh))
        out.b = nn.Parameter(torch.tensor(b))
        return out

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"
