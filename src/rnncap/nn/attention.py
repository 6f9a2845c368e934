"""Scaled dot-product attention over a CNN feature grid and the LSTM that attends with it.

Same maths as `rnncap.numpy_ref`: `A` is (N, H, P), P grid cells; the step's context is computed
from prev_h and enters the gates through `Wattn` (H, 4H).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rnncap.nn.lstm import lstm_cell_update


def dot_product_attention(prev_h: Tensor, A: Tensor) -> tuple[Tensor, Tensor]:
    """Attend over A (N, H, P) with prev_h (N, H) -> (context (N, H), weights (N, P))."""
    H = A.shape[1]
    scores = torch.bmm(prev_h.unsqueeze(1), A).squeeze(1) / math.sqrt(H)  # (N, P)
    weights = torch.softmax(scores, dim=1)  # (N, P)
    context = torch.bmm(A, weights.unsqueeze(2)).squeeze(2)  # (N, H)
    return context, weights


class AttentionLSTM(nn.Module):
    """Batch-first LSTM with attention: `forward(x (N, T, D), A (N, H, P)) -> (h, weights)`.

    Parameters `Wx` (D, 4H), `Wh` (H, 4H), `Wattn` (H, 4H), `b` (4H,), gate order i, f, o, g;
    the sequence starts from h0 = c0 = mean of A over the grid.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.Wx = nn.Parameter(torch.empty(input_size, 4 * hidden_size))
        self.Wh = nn.Parameter(torch.empty(hidden_size, 4 * hidden_size))
        self.Wattn = nn.Parameter(torch.empty(hidden_size, 4 * hidden_size))
        self.b = nn.Parameter(torch.empty(4 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) like torch.nn.LSTM."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.Wx, self.Wh, self.Wattn, self.b):
            nn.init.uniform_(p, -bound, bound)

    def initial_state(self, A: Tensor) -> tuple[Tensor, Tensor]:
        """h0 = c0 = A averaged over the P grid cells, each (N, H)."""
        h0 = A.mean(dim=2)
        return h0, h0

    def forward(self, x: Tensor, A: Tensor) -> tuple[Tensor, Tensor]:
        """Hidden states (N, T, H) and attention weights (N, T, P) for x (N, T, D), A (N, H, P)."""
        N, T, D = x.shape
        xa = torch.addmm(self.b, x.reshape(N * T, D), self.Wx).view(N, T, -1)  # (N, T, 4H)
        h, c = self.initial_state(A)
        hs, ws = [], []
        for t in range(T):
            h, c, w = self.step_from_input(xa[:, t], h, c, A)
            hs.append(h)
            ws.append(w)
        return torch.stack(hs, dim=1), torch.stack(ws, dim=1)

    def step(
        self, x: Tensor, prev_h: Tensor, prev_c: Tensor, A: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One timestep: x (N, D), prev_h/prev_c (N, H), A (N, H, P) -> (h, c, weights (N, P))."""
        return self.step_from_input(self.input_term(x), prev_h, prev_c, A)

    def input_term(self, x: Tensor) -> Tensor:
        """x Wx + b, the input's share of the gates: x (N, D) -> (N, 4H)."""
        return torch.addmm(self.b, x, self.Wx)

    def step_from_input(self, xa: Tensor, prev_h: Tensor, prev_c: Tensor, A: Tensor):
        """`step` given xa = `input_term(x)` (N, 4H), e.g. looked up per word while decoding."""
        context, weights = dot_product_attention(prev_h, A)  # (N, H), (N, P)
        a = xa + prev_h @ self.Wh + context @ self.Wattn  # (N, 4H)
        next_h, next_c = lstm_cell_update(a, prev_c)
        return next_h, next_c, weights

    @classmethod
    def from_numpy(cls, Wx, Wh, b, Wattn) -> AttentionLSTM:
        """An AttentionLSTM holding copies of NumPy Wx, Wh, b, Wattn (dtype kept)."""
        D, H4 = Wx.shape
        out = cls(D, H4 // 4)
        out.Wx = nn.Parameter(torch.tensor(Wx))
        out.Wh = nn.Parameter(torch.tensor(Wh))
        out.Wattn = nn.Parameter(torch.tensor(Wattn))
        out.b = nn.Parameter(torch.tensor(b))
        return out

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"
