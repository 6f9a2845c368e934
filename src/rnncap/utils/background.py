"""Running one stage of a pipeline in a background thread, a few items ahead of its consumer; on
CUDA the stage queues its kernels on a stream of its own, so stages overlap on the device too.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

T = TypeVar("T")
_DONE = object()


def in_background(
    produce: Callable[[], Iterator[T]],
    device: torch.device | str = "cpu",
    depth: int = 2,
    name: str = "rnncap-stage",
) -> Iterator[T]:
    """Iterate `produce()` in a thread, at most `depth` items ahead; yields its items in order.

    The thread runs under `torch.inference_mode` (grad mode is per thread). On CUDA it runs on
    a new stream and each item is handed over with an event: the consumer's current stream waits
    for it, and the item's CUDA tensors are marked as used there (`Tensor.record_stream`), so
    their memory is not reused before the consumer's kernels are done. An exception in the
    thread is raised in the consumer; closing the generator early stops the thread.
    """
    stage = Background(produce, device, depth, name)
    try:
        yield from stage
    finally:
        stage.close()


class Background:
    """The iterator behind `in_background`, for a consumer that also asks how many items are
    ready (`ready()`), e.g. to take several at once when it has fallen behind. `close()` stops
    the thread (call it when done, as `in_background` does)."""

    def __init__(self, produce, device="cpu", depth: int = 2, name: str = "rnncap-stage"):
        self.device = torch.device(device)
        self._stage = _Stage(produce, self.device, depth)
        self._thread = threading.Thread(target=self._stage.run, name=name, daemon=True)
        self._thread.start()
        self._done = False

    def __iter__(self) -> Background:
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        item, event, error = self._stage.items.get()
        if error is not None:
            self._done = True
            raise error
        if item is _DONE:
            self._done = True
            raise StopIteration
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            _record_stream(item, current)
        return item

    def ready(self) -> int:
        """Items produced and not yet taken (the end of the stream counts as one)."""
        return self._stage.items.qsize()

    def close(self) -> None:
        self._stage.stop.set()
        self._thread.join()


class _Stage:
    """The thread's side of `in_background`: runs `produce` and queues (item, event, error)."""

    def __init__(self, produce, device: torch.device, depth: int) -> None:
        self.produce = produce
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.items: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()

    def put(self, entry) -> bool:
        """Queue an entry unless the consumer has stopped; False once it has."""
        while not self.stop.is_set():
            try:
                self.items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            with torch.inference_mode(), _on(self.stream, self.device):
                produced = self.produce()
                try:
                    for item in produced:
                        event = None
                        if self.stream is not None:
                            event = torch.cuda.Event()
                            event.record(self.stream)
                        if not self.put((item, event, None)):
                            return
                finally:
                    if hasattr(produced, "close"):  # a generator: run its clean-up here
                        produced.close()
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            self.put((None, None, error))
            return
        self.put((_DONE, None, None))


def _on(stream, device: torch.device) -> contextlib.ExitStack:
    """`torch.cuda.stream(stream)` on `device` as one context, or nothing when stream is None."""
    stack = contextlib.ExitStack()
    if stream is not None:
        stack.enter_context(torch.cuda.device(device))
        stack.enter_context(torch.cuda.stream(stream))
    return stack


def _record_stream(item, stream) -> None:
    """Mark every CUDA tensor inside `item` (tuples, lists, dicts) as used on `stream`."""
    if isinstance(item, torch.Tensor):
        if item.is_cuda:
            item.record_stream(stream)
    elif isinstance(item, list | tuple):
        for part in item:
            _record_stream(part, stream)
    elif isinstance(item, dict):
        for part in item.values():
            _record_stream(part, stream)
