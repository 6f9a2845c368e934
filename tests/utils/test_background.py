"""`rnncap.utils.background.in_background`: items in order, errors raised in the consumer, an
early stop ends the thread, the stage runs without gradients (and on its own stream on CUDA)."""

from __future__ import annotations

import threading

import pytest
import torch

from rnncap.utils.background import in_background


def _stage_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rnncap-stage"]


def test_items_in_order_and_computed_without_gradients():
    weight = torch.ones(3, requires_grad=True)

    def produce():
        for k in range(20):
            yield k, weight * k

    got = list(in_background(produce, depth=3))
    assert [k for k, _ in got] == list(range(20))
    assert all(torch.equal(x, torch.full((3,), float(k))) for k, x in got)
    assert not any(x.requires_grad for _, x in got)
    assert not _stage_threads()


def test_an_error_in_the_stage_is_raised_in_the_consumer():
    def produce():
        yield 1
        raise OSError("disk gone")

    items = in_background(produce)
    assert next(items) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(items)
    assert not _stage_threads()


def test_closing_early_stops_the_stage_and_runs_its_clean_up():
    cleaned = threading.Event()

    def produce():
        try:
            yield from range(10**9)
        finally:
            cleaned.set()

    items = in_background(produce, depth=2)
    assert [next(items) for _ in range(5)] == [0, 1, 2, 3, 4]
    items.close()
    assert cleaned.is_set() and not _stage_threads()


@pytest.mark.gpu
def test_cuda_items_are_ready_on_the_consumers_stream():
    device = torch.device("cuda")
    streams = []

    def produce():
        for k in range(8):
            streams.append(torch.cuda.current_stream(device))
            x = torch.full((1 << 20,), float(k), device=device)
            for _ in range(20):  # queue enough work for the hand-over to matter
                x = x * 1.0 + 0.0
            yield x

    total = [float(x.sum()) for x in in_background(produce, device)]
    assert total == [float(k * (1 << 20)) for k in range(8)]
    assert streams[0] != torch.cuda.current_stream(device)
