"""A vanilla (tanh) RNN written from scratch: one autograd Function with a hand-written backward.

Parameters follow the NumPy reference: `Wx` (D, H), `Wh` (H, H), `b` (H,);
`next_h = tanh(x Wx + prev_h Wh + b)`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from rnncap.nn.graphs import LoopGraphs, use_graphs


class _RNNFunction(torch.autograd.Function):
    """The whole sequence as one autograd node: per step one matmul forward, one matmul and one
    multiply backward; weight and input gradients are one matmul each over all N*T positions.
    With `graphs` (CUDA only) the two time loops are replayed as recorded CUDA graphs."""

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        h0: Tensor,
        Wx: Tensor,
        Wh: Tensor,
        b: Tensor,
        graphs: LoopGraphs | None = None,
    ):
        N, T, D = x.shape
        H = Wh.shape[0]
        if graphs is None:
            xa = torch.addmm(b, x.reshape(N * T, D), Wx).view(N, T, H)  # (N, T, H)
            hs = x.new_empty(N, T, H)
            _forward_loop(xa, h0, Wh, hs)
        else:
            make = lambda: _buffers(x, N, T, H, "xa", "h0", "Wh", "hs")  # noqa: E731
            run = graphs.get(("forward", T, N, H, x.dtype, x.device), make, _forward_loop)
            buf = run.buffers
            torch.addmm(b, x.reshape(N * T, D), Wx, out=buf["xa"].view(N * T, H))
            buf["h0"].copy_(h0)
            buf["Wh"].copy_(Wh)
            run.replay()
            hs = buf["hs"].clone()  # overwritten by the next call
        ctx.save_for_backward(x, h0, Wx, Wh, hs)
        ctx.graphs = graphs
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs: Tensor):
        x, h0, Wx, Wh, hs = ctx.saved_tensors
        graphs = ctx.graphs
        N, T, D = x.shape
        H = Wh.shape[0]
        if graphs is None:
            dtanh = 1 - hs * hs  # (N, T, H), tanh' = 1 - y^2 for every step at once
            dA = x.new_empty(N, T, H)  # gradient of the pre-activations
            dh = _backward_loop(dtanh, dhs, Wh, dA)
        else:
            make = lambda: _buffers(x, N, T, H, "dtanh", "dhs", "Wh", "dA", "dh")  # noqa: E731
            run = graphs.get(("backward", T, N, H, x.dtype, x.device), make, _backward_graphed)
            buf = run.buffers
            torch.mul(hs, hs, out=buf["dtanh"]).neg_().add_(1)
            buf["dhs"].copy_(dhs)
            buf["Wh"].copy_(Wh)
            run.replay()
            dA, dh = buf["dA"], buf["dh"].clone()  # dA is used up below
        dA2 = dA.view(N * T, H)
        needs = ctx.needs_input_grad
        dx = torch.mm(dA2, Wx.t()).view(N, T, D) if needs[0] else None
        dWx = torch.mm(x.reshape(N * T, D).t(), dA2) if needs[2] else None
        dWh = None
        if needs[3]:
            h_prev = torch.cat([h0.unsqueeze(1), hs[:, :-1]], dim=1).view(N * T, H)
            dWh = torch.mm(h_prev.t(), dA2)
        db = dA2.sum(0) if needs[4] else None
        return dx, dh, dWx, dWh, db, None


def _forward_loop(xa, h0, Wh, hs) -> None:
    """h_t = tanh(xa_t + h_{t-1} Wh) into hs (N, T, H); xa (N, T, H) holds x_t Wx + b."""
    h = h0
    for t in range(hs.shape[1]):
        h = torch.tanh(torch.addmm(xa[:, t], h, Wh), out=hs[:, t])


def _backward_loop(dtanh, dhs, Wh, dA):
    """The reverse recurrence into dA (N, T, H); returns the gradient of h0 (N, H)."""
    T = dA.shape[1]
    WhT = Wh.t()
    dh = dhs[:, T - 1]
    for t in range(T - 1, -1, -1):
        da = torch.mul(dh, dtanh[:, t], out=dA[:, t])
        dh = torch.addmm(dhs[:, t - 1], da, WhT) if t > 0 else torch.mm(da, WhT)
    return dh


# --------------------------------------------------------------------------- CUDA graphs
def _buffers(like: Tensor, N: int, T: int, H: int, *names: str) -> dict[str, Tensor]:
    shapes = {
        "xa": (N, T, H),
        "h0": (N, H),
        "Wh": (H, H),
        "hs": (N, T, H),
        "dtanh": (N, T, H),
        "dhs": (N, T, H),
        "dA": (N, T, H),
        "dh": (N, H),
    }
    return {name: like.new_zeros(shapes[name]) for name in names}


def _backward_graphed(dtanh, dhs, Wh, dA, dh) -> None:
    """`_backward_loop` with its result written into a fixed buffer (for recording)."""
    dh.copy_(_backward_loop(dtanh, dhs, Wh, dA))


class RNN(nn.Module):
    """Single-layer, batch-first tanh RNN: `forward(x (N, T, D)) -> h (N, T, H)`.

    Setting `cuda_graphs = True` replays the time loops of `forward` and its backward as CUDA
    graphs recorded once per (N, T) shape, on CUDA inputs only (see `rnncap.nn.graphs`).
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.cuda_graphs = False  # opt-in; ignored on CPU
        self._graphs: LoopGraphs | None = None
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
        graphs = None
        if use_graphs(self.cuda_graphs, x, self.Wx):
            graphs = self._graphs = self._graphs or LoopGraphs()
        with torch.autocast(x.device.type, enabled=False):
            return _RNNFunction.apply(x.to(dtype), h0.to(dtype), self.Wx, self.Wh, self.b, graphs)

    def step(self, x: Tensor, prev_h: Tensor) -> Tensor:
        """One timestep: x (N, D), prev_h (N, H) -> next_h (N, H)."""
        return self.step_from_input(self.input_term(x), prev_h)

    def input_term(self, x: Tensor) -> Tensor:
        """x Wx + b, the input's share of the pre-activation: x (N, D) -> (N, H)."""
        return torch.addmm(self.b, x, self.Wx)

    def step_from_input(self, xw: Tensor, prev_h: Tensor) -> Tensor:
        """`step` given xw = `input_term(x)` (N, H), e.g. looked up per word while decoding."""
        return torch.tanh(xw + prev_h @ self.Wh)

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
