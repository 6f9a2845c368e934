"""The CUDA-graph path of the RNN and LSTM against their eager path.

On CPU the recording is replaced by running the loop on the same fixed buffers (`EagerReplay`),
which checks everything around the graph (buffers filled, outputs copied out before the next call
overwrites them); the `gpu` tests record and replay real CUDA graphs.
"""

from __future__ import annotations

import pytest
import torch

from rnncap.nn import LSTM, RNN
from rnncap.nn.graphs import LoopGraphs
from rnncap.nn.lstm import _LSTMFunction
from rnncap.nn.rnn import _RNNFunction


class EagerReplay(LoopGraphs):
    """LoopGraphs whose 'replay' runs the loop again on the fixed buffers (no CUDA needed)."""

    def _record(self, loop, buffers):
        return lambda: loop(**buffers)


def _inputs(cell: str, N: int, T: int, D: int, H: int, device, dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    G = 4 * H if cell == "lstm" else H
    bound = H**-0.5

    def rand(*shape, scale=1.0):
        return (
            (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1)
            .mul(scale)
            .to(device=device, dtype=dtype)
        )

    x, dout = rand(N, T, D), rand(N, T, H)
    state = [rand(N, H) for _ in range(2 if cell == "lstm" else 1)]
    params = [rand(D, G, scale=bound), rand(H, G, scale=bound), rand(G, scale=bound)]
    return x, state, params, dout


def _forward(cell: str, x, state, params, graphs):
    """Apply the autograd Function; returns (out, leaves) with every input a grad leaf."""
    leaves = [t.clone().requires_grad_() for t in (x, *state, *params)]
    function = _LSTMFunction if cell == "lstm" else _RNNFunction
    return function.apply(*leaves, graphs), leaves


def _grads(out, leaves, dout):
    out.backward(dout)
    return [t.grad for t in leaves]


def _check(cell: str, device, dtype, graphs, exact: bool) -> None:
    sizes = [(3, 5, 4, 6), (2, 1, 4, 6), (3, 5, 4, 6), (4, 7, 4, 6)]  # a shape comes back
    for seed, (N, T, D, H) in enumerate(sizes):
        x, state, params, dout = _inputs(cell, N, T, D, H, device, dtype, seed)
        want, leaves = _forward(cell, x, state, params, None)
        want_grads = _grads(want, leaves, dout)
        # Two sequences through the graphs before either goes backward: the second call
        # overwrites the graphs' buffers, so the first must have kept its own copies.
        got, got_leaves = _forward(cell, x, state, params, graphs)
        other, other_leaves = _forward(cell, x.flip(0), state, params, graphs)
        other_grads = _grads(other, other_leaves, dout)
        got_grads = _grads(got, got_leaves, dout)
        tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got, want, **tol)
        for a, b in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(a, b, **tol)
        assert other_grads[0].shape == x.shape


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_graph_buffers_match_eager_cpu(cell):
    graphs = EagerReplay(capacity=2)
    _check(cell, "cpu", torch.float64, graphs, exact=True)
    assert len(graphs) == 2  # forward and backward of the last shape; older ones dropped


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_graphs_are_off_on_cpu(cell):
    m = (LSTM if cell == "lstm" else RNN)(3, 4)
    m.cuda_graphs = True
    m(torch.randn(2, 3, 3)).sum().backward()
    assert m._graphs is None


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_cuda_graphs_match_eager_cuda(cell, dtype):
    # The replayed kernels are the eager ones with the same inputs; float32 gets a few ulps of
    # room in case cuBLAS picks another algorithm while recording.
    _check(cell, "cuda", dtype, LoopGraphs(capacity=2), exact=False)


@pytest.mark.gpu
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_module_switch_records_graphs_cuda(cell):
    torch.manual_seed(0)
    eager = (LSTM if cell == "lstm" else RNN)(16, 32).cuda()
    graphed = (LSTM if cell == "lstm" else RNN)(16, 32).cuda()
    graphed.load_state_dict(eager.state_dict())
    graphed.cuda_graphs = True
    x = torch.randn(8, 10, 16, device="cuda")
    for m in (eager, graphed):
        m(x).square().sum().backward()
    assert graphed._graphs is not None and len(graphed._graphs) == 2
    for name, p in eager.named_parameters():
        torch.testing.assert_close(getattr(graphed, name).grad, p.grad, rtol=1e-5, atol=1e-6)
    with torch.inference_mode():  # buffers recorded outside inference mode are reused inside
        torch.testing.assert_close(graphed(x), eager(x), rtol=1e-5, atol=1e-6)
