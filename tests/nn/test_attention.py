"""Attention and the attention LSTM against loops written out, numerical gradients and NumPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnncap.nn import AttentionLSTM, dot_product_attention


def test_dot_product_attention_matches_loops():
    torch.manual_seed(0)
    N, H, P = 2, 3, 4
    prev_h, A = torch.randn(N, H), torch.randn(N, H, P)
    context, weights = dot_product_attention(prev_h, A)
    for n in range(N):
        scores = [sum(prev_h[n, k] * A[n, k, p] for k in range(H)) / math.sqrt(H) for p in range(P)]
        exp = [math.exp(s) for s in scores]
        w = [e / sum(exp) for e in exp]
        torch.testing.assert_close(weights[n], torch.tensor(w))
        ctx = [sum(A[n, k, p] * w[p] for p in range(P)) for k in range(H)]
        torch.testing.assert_close(context[n], torch.tensor(ctx))


@pytest.mark.parametrize("image", [[2, 0, 2, 2, 3, 0, 2], [0], [1, 1, 1], [3, 2, 1, 0]])
def test_rows_sharing_grids_match_numpy(image):
    # Rows that share their image's grid (beam hypotheses): any order, any count per image,
    # images without rows; against the per-row formula in NumPy, float64.
    g = torch.Generator().manual_seed(len(image))
    N, H, P = 4, 5, 6
    A = torch.randn(N, H, P, generator=g, dtype=torch.float64)
    prev_h = torch.randn(len(image), H, generator=g, dtype=torch.float64)
    context, weights = dot_product_attention(prev_h, A, torch.tensor(image))
    a, h = A.numpy(), prev_h.numpy()
    for b, n in enumerate(image):
        scores = h[b] @ a[n] / np.sqrt(H)  # (P,)
        w = np.exp(scores - scores.max())
        w /= w.sum()
        np.testing.assert_allclose(weights[b].numpy(), w, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(context[b].numpy(), a[n] @ w, rtol=1e-12, atol=1e-12)


def _reference_forward(m: AttentionLSTM, x, A):
    """The attention LSTM spelled out with einsum, one line per equation of docs/design.md."""
    H = m.hidden_size
    h = c = A.mean(dim=2)
    hs, ws = [], []
    for t in range(x.shape[1]):
        w = torch.softmax(torch.einsum("nh,nhp->np", h, A) / H**0.5, dim=1)
        context = torch.einsum("nhp,np->nh", A, w)
        a = x[:, t] @ m.Wx + h @ m.Wh + context @ m.Wattn + m.b
        i, f, o = (torch.sigmoid(a[:, k * H : (k + 1) * H]) for k in range(3))
        g = torch.tanh(a[:, 3 * H :])
        c = f * c + i * g
        h = o * torch.tanh(c)
        hs.append(h)
        ws.append(w)
    return torch.stack(hs, 1), torch.stack(ws, 1)


def _check_forward_and_step(device: str) -> None:
    torch.manual_seed(1)
    N, T, D, H, P = 2, 3, 4, 5, 6
    m = AttentionLSTM(D, H).to(device)
    x, A = torch.randn(N, T, D, device=device), torch.randn(N, H, P, device=device)
    h, w = m(x, A)
    h_ref, w_ref = _reference_forward(m, x, A)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(w, w_ref)
    prev_h = prev_c = A.mean(dim=2)
    for t in range(T):
        prev_h, prev_c, w_t = m.step(x[:, t], prev_h, prev_c, A)
        torch.testing.assert_close(prev_h, h_ref[:, t])
        torch.testing.assert_close(w_t, w_ref[:, t])


def test_forward_and_step_cpu():
    _check_forward_and_step("cpu")


@pytest.mark.gpu
def test_forward_and_step_cuda():
    _check_forward_and_step("cuda")


def test_gradcheck_float64():
    torch.manual_seed(2)
    m = AttentionLSTM(3, 4).double()
    x = torch.randn(2, 3, 3, dtype=torch.double, requires_grad=True)
    A = torch.randn(2, 4, 5, dtype=torch.double, requires_grad=True)
    names = ["Wx", "Wh", "Wattn", "b"]
    params = [getattr(m, k).detach().clone().requires_grad_() for k in names]

    def f(x, A, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps, strict=True)), (x, A))

    assert torch.autograd.gradcheck(f, (x, A, *params))


def test_numpy_reference_float64():
    attn_ref = pytest.importorskip("rnncap.numpy_ref.attention")
    import numpy as np

    rng = np.random.default_rng(3)
    N, T, D, H, P = 2, 3, 4, 5, 6
    x, A = rng.standard_normal((N, T, D)), rng.standard_normal((N, H, P))
    Wx, Wh = rng.standard_normal((D, 4 * H)) * 0.3, rng.standard_normal((H, 4 * H)) * 0.3
    Wattn, b = rng.standard_normal((H, 4 * H)) * 0.3, rng.standard_normal(4 * H)
    dout = rng.standard_normal((N, T, H))
    h_ref, w_ref, cache = attn_ref.attention_lstm_forward(x, A, Wx, Wh, Wattn, b)
    dx_ref, dA_ref, dWx_ref, dWh_ref, dWattn_ref, db_ref = attn_ref.attention_lstm_backward(
        dout, cache
    )

    m = AttentionLSTM.from_numpy(Wx, Wh, b, Wattn)
    xt, At = torch.tensor(x, requires_grad=True), torch.tensor(A, requires_grad=True)
    h, w = m(xt, At)
    (h * torch.tensor(dout)).sum().backward()
    pairs = [
        (h, h_ref),
        (w, w_ref),
        (xt.grad, dx_ref),
        (At.grad, dA_ref),
        (m.Wx.grad, dWx_ref),
        (m.Wh.grad, dWh_ref),
        (m.Wattn.grad, dWattn_ref),
        (m.b.grad, db_ref),
    ]
    for got, want in pairs:
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=0, atol=1e-10)

    prev_h = rng.standard_normal((N, H))
    context_ref, weights_ref, _ = attn_ref.attention_forward(prev_h, A)
    context, weights = dot_product_attention(torch.tensor(prev_h), torch.tensor(A))
    np.testing.assert_allclose(context.numpy(), context_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(weights.numpy(), weights_ref, rtol=0, atol=1e-12)
