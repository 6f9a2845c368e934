"""A vanilla (tanh) RNN written from scratch: one autograd Function with a hand-written backward.

Parameters follow the NumPy reference: `Wx` (D, H), `Wh` (H, H), `b` (H,);
`next_h = tanh(x Wx + prev_h Wh + b)`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


class _RNNFunction(torch.autograd.Function):
    """The whole sequence as one autograd node: per step one matmul forward, one matmul and one
    multiply backward; weight and input gradients are one matmul each over all N*T positions."""

    @staticmethod
    def forward(ctx, x: Tensor, h0: Tensor, Wx: Tensor, Wh: Tensor, b: Tensor):
        N, T, D = x.shape
        H = Wh.shape[0]
        xa = torch.addmm(b, x.reshape(N * T, D), Wx).view(N, T, H)  # (N, T, H)
        hs = x.new_empty(N, T, H)
        h = h0
        for t in range(T):
            h = torch.tanh(torch.addmm(xa[:, t], h, Wh), out=hs[:, t])
        ctx.save_for_backward(x, h0, Wx, Wh, hs)
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs: Tensor):
        x, h0, Wx, Wh, hs = ctx.saved_tensors
        N, T, D = x.shape
        H = Wh.shape[0]
        dtanh = 1 - hs * hs  # (N, T, H), tanh' = 1 - y^2 for every step at once
        dA = x.new_empty(N, T, H)  # gradient of the pre-activations
        WhT = Wh.t()
        dh = dhs[:, T - 1]
        for t in range(T - 1, -1, -1):
            da = torch.mul(dh, dtanh[:, t], out=dA[:, t])
            dh = torch.addmm(dhs[:, t - 1], da, WhT) if t > 0 else torch.mm(da, WhT)
        dA2 = dA.view(N * T, H)
        needs = ctx.needs_input_grad
        dx = torch.mm(dA2, Wx.t()).view(N, T, D) if needs[0] else None
        dWx = torch.mm(x.reshape(N * T, D).t(), dA2) if needs[2] else None
        dWh = None
        if needs[3]:
            h_prev = torch.cat([h0.unsqueeze(1), hs[:, :-1]], dim=1).view(N * T, H)
            dWh = torch.mm(h_prev.t(), dA2)
        db = dA2.sum(0) if needs[4] else None
        return dx, dh, dWx, dWh, db


class RNN(nn.Module):
    """Single-layer, batch-first tanh RNN: `forward(x (N, T, D)) -> h (N, T, H)`."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.Wx = nn.Parameter(torch.empty(input_size, hidden_size))
        self.Wh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.b = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) like torch.nn.RNN."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.Wx, self.Wh, self.b):
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor, h0: Tensor | None = None) -> Tensor:
        """All hidden states (N, T, H) for inputs x (N, T, D); h0 (N, H) defaults to zeros."""
        if h0 is None:
            h0 = self.Wh.new_zeros(x.shape[0], self.hidden_size)
        # The hand-written Function computes in the parameters' dtype, also under autocast.
        dtype = self.Wx.dtype
        with torch.autocast(x.device.type, enabled=False):
            return _RNNFunction.apply(x.to(dtype), h0.to(dtype), self.Wx, self.Wh, self.b)

    def step(self, x: Tensor, prev_h: Tensor) -> Tensor:
        """One timestep: x (N, D), prev_h (N, H) -> next_h (N, H)."""
        return torch.tanh(torch.addmm(self.b, x, self.Wx) + prev_h @ self.Wh)

    @classmethod
    def from_torch(cls, m: nn.Module) -> RNN:
        """An equivalent RNN from a single-layer, batch-first, tanh `torch.nn.RNN` with bias."""
        if m.num_layers != 1 or not m.batch_first or not m.bias or m.bidirectional:
            raise ValueError("from_torch needs a single-layer, batch_first, biased, 1-way RNN")
        if getattr(m, "nonlinearity", "tanh") != "tanh":
            raise ValueError("from_torch needs nonlinearity='tanh'")
        w_ih = m.weight_ih_l0.detach()
        out = cls(m.input_size, m.hidden_size).to(device=w_ih.device, dtype=w_ih.dtype)
        with torch.no_grad():
            out.Wx.copy_(w_ih.t())
            out.Wh.copy_(m.weight_hh_l0.detach().t())
            out.b.copy_(m.bias_ih_l0 + m.bias_hh_l0)
        return out

    @classmethod
    def from_numpy(cls, Wx, Wh, b) -> RNN:
        """An RNN holding copies of NumPy parameters Wx (D, H), Wh (H, H), b (H,) (dtype kept)."""
        D, H = Wx.shape
        out = cls(D, H)
        out.Wx = nn.Parameter(torch.tensor(Wx))
        out.Wh = nn.Parameter(torch.tensor(Wh))
        out.b = nn.Parameter(torch.tensor(b))
        return out

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"
