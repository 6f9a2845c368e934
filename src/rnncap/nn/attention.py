"""Scaled dot-product attention over a CNN feature grid and the LSTM that attends with it.

Same maths as `rnncap.numpy_ref`: `A` is (N, H, P), P grid cells; the step's context is computed
from prev_h and enters the gates through `Wattn` (H, 4H).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rnncap.nn.lstm import lstm_cell_update


def dot_product_attention(prev_h: Tensor, A: Tensor, image: Tensor | None = None):
    """Attend over grids with prev_h (B, H) -> (context (B, H), weights (B, P)).

    A (B, H, P): row b attends over A[b]. With `image` (B,) ints, A (N, H, P) holds one grid per
    image and row b attends over A[image[b]]: a beam's hypotheses share their image's grid.
    """
    if image is not None:
        if prev_h.device.type == "cpu" and len(image) > 0:
            return _shared_grid_attention(prev_h, A, image)
        A = A.index_select(0, image)  # (B, H, P); on a GPU the copy costs less than a sync
    H = A.shape[1]
    scores = torch.bmm(prev_h.unsqueeze(1), A).squeeze(1) / math.sqrt(H)  # (B, P)
    weights = torch.softmax(scores, dim=1)  # (B, P)
    context = torch.bmm(A, weights.unsqueeze(2)).squeeze(2)  # (B, H)
    return context, weights


def _shared_grid_attention(prev_h: Tensor, A: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
    """`dot_product_attention` with rows sharing grids, A (N, H, P), image (B,): each image's
    rows are padded to the largest count k and multiplied with their grid at once, (N, k, H) x
    (N, H, P), so that a grid is read once per step rather than once per row (and never copied)."""
    N, H, P = A.shape
    B = prev_h.shape[0]
    counts = torch.bincount(image, minlength=N)  # (N,) rows per image
    k = int(counts.max())
    order = torch.argsort(image, stable=True)  # rows grouped by image, in row order
    starts = counts.cumsum(0) - counts  # (N,) where each image's group begins
    slot = torch.empty_like(image)
    slot[order] = torch.arange(B, device=image.device) - starts[image[order]]
    pos = image * k + slot  # (B,) each row's place in the padded (N * k) layout
    padded = prev_h.new_zeros(N * k, H).index_copy_(0, pos, prev_h)
    scores = torch.bmm(padded.view(N, k, H), A).view(N * k, P).index_select(0, pos)
    weights = torch.softmax(scores / math.sqrt(H), dim=1)  # (B, P)
    padded_w = weights.new_zeros(N * k, P).index_copy_(0, pos, weights)
    context = torch.bmm(padded_w.view(N, k, P), A.transpose(1, 2))  # (N, k, H)
    return context.view(N * k, H).index_select(0, pos), weights


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
        xa = self.input_term(x.reshape(N * T, D)).view(N, T, -1)  # (N, T, 4H)
        h, c = self.initial_state(A)
        hs, ws = [], []
        for t in range(T):
            h, c, w = self.step_from_input(xa[:, t], h, c, A)
            hs.append(h)
            ws.append(w)
        return torch.stack(hs, dim=1), torch.stack(ws, dim=1)

    def step(
        self, x: Tensor, prev_h: Tensor, prev_c: Tensor, A: Tensor, image: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One timestep: x (B, D), prev_h/prev_c (B, H), A (B, H, P) -> (h, c, weights (B, P));
        with `image` (B,), A (N, H, P) holds one grid per image (see dot_product_attention)."""
        return self.step_from_input(self.input_term(x), prev_h, prev_c, A, image)

    def input_term(self, x: Tensor) -> Tensor:
        """x Wx + b, the input's share of the gates: x (N, D) -> (N, 4H)."""
        return torch.addmm(self.b, x, self.Wx)

    def step_from_input(self, xa, prev_h, prev_c, A, image: Tensor | None = None):
        """`step` given xa = `input_term(x)` (B, 4H), e.g. looked up per word while decoding."""
        context, weights = dot_product_attention(prev_h, A, image)  # (B, H), (B, P)
        a = xa + prev_h @ self.Wh + context @ self.Wattn  # (B, 4H)
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
