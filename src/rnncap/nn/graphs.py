"""Optional CUDA-graph replay of the recurrent cells' time loops (off by default, CUDA only).

On a GPU the from-scratch RNN and LSTM are bound by kernel launches, not arithmetic: each time
step is a handful of small kernels, and eager PyTorch spends several microseconds of CPU time
launching each one. `LoopGraphs` records a whole time loop once per shape as a CUDA graph and
then launches it as one unit. The maths stays the hand-written loop in `rnn.py` / `lstm.py`; only
how its kernels are launched changes. A graph reads and writes fixed buffers, so callers copy
their inputs into `buffers` before `replay()` and copy out whatever must outlive the next call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch
from torch import Tensor


class GraphedLoop:
    """One recorded loop: its fixed `buffers` (name -> tensor) and `replay()`."""

    def __init__(self, buffers: dict[str, Tensor], replay: Callable[[], None]) -> None:
        self.buffers = buffers
        self.replay = replay


class LoopGraphs:
    """Recorded loops by shape key, the `capacity` most recently used ones kept.

    `get(key, make_buffers, loop)` returns the `GraphedLoop` for `key`, recording
    `loop(**buffers)` on first use: the buffers come from `make_buffers()` and the graph's own
    temporaries from its private memory pool, both kept until the entry is dropped. Not thread
    safe: one module, one stream.
    """

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, GraphedLoop] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self,
        key: Hashable,
        make_buffers: Callable[[], dict[str, Tensor]],
        loop: Callable[..., None],
    ) -> GraphedLoop:
        entry = self._entries.pop(key, None)
        if entry is None:
            while len(self._entries) >= self.capacity:
                self._entries.popitem(last=False)
            # Buffers must be ordinary tensors even when called under inference_mode: later
            # calls outside it write into them.
            with torch.inference_mode(False), torch.no_grad():
                buffers = make_buffers()
                entry = GraphedLoop(buffers, self._record(loop, buffers))
        self._entries[key] = entry
        return entry

    def _record(self, loop: Callable[..., None], buffers: dict[str, Tensor]) -> Callable[[], None]:
        """Record loop(**buffers) as a CUDA graph; returns the function that replays it."""
        # Warm up on a side stream first (cuBLAS creates its handle and workspace lazily, which
        # must not happen during capture); the buffers' contents are scratch at this point.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            loop(**buffers)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: a backward pass records from autograd's own thread while other threads
        # (a DataLoader's pin-memory thread, say) may go on calling CUDA.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            loop(**buffers)
        return graph.replay


def use_graphs(enabled: bool, *tensors: Tensor) -> bool:
    """Whether a cell should replay its loops as CUDA graphs for these inputs."""
    return (
        enabled
        and all(t.is_cuda for t in tensors)
        and not torch.cuda.is_current_stream_capturing()  # already inside someone's graph
    )
