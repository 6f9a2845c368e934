"""The web service encoding each request on its own (ServeConfig.encode_per_request, the default
with the ONNX Runtime encoder): the same captions as encoding whole batches, the searches still
batched, and the queue's limits, errors and timeouts as before."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from fastapi.testclient import TestClient

from rnncap.decode.captioner import load
from rnncap.serving.api_error import ApiError
from rnncap.serving.app import ServeConfig, create_app
from rnncap.serving.batcher import MicroBatcher
from support.inference import example_images, make_tiny_model, shared_encoder


def _file(path):
    return ("file", (path.name, path.read_bytes(), "image/jpeg"))


def _check(result, expected):
    caption, score, attention = expected
    assert result["caption"] == caption
    assert result["score"] == pytest.approx(score, abs=1e-3)
    for row, want in zip(result["attention"], attention.tolist(), strict=True):
        assert row == pytest.approx(want, abs=1e-4)


def test_same_captions_as_one_by_one_decoding(tiny_loaded, tiny_reference):
    paths = example_images()
    config = ServeConfig(encode_per_request=True, max_batch=4, max_wait_ms=5, timeout=60)
    with TestClient(create_app(tiny_loaded, config)) as client:
        assert client.get("/healthz").json()["config"]["encode_per_request"] is True
        several = client.post("/caption?attention=1", files=[_file(p) for p in paths])
        assert several.status_code == 200, several.text
        for path, result in zip(paths, several.json()["results"], strict=True):
            assert result["image"] == path.name
            _check(result, tiny_reference[path.name])

        def one(path):
            return client.post("/caption?attention=1", files=[_file(path)]).json()["results"][0]

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, paths * 3))
        for path, result in zip(paths * 3, results, strict=True):
            _check(result, tiny_reference[path.name])
        stats = client.get("/healthz").json()["batches"]
        assert stats["images"] == 4 * len(paths) and stats["requests"] == 1 + 3 * len(paths)
        assert client.app.state.batcher._queued_images == 0


def test_torch_encoder_encodes_whole_batches_by_default(tiny_loaded):
    with TestClient(create_app(tiny_loaded, ServeConfig())) as client:
        assert client.get("/healthz").json()["config"]["encode_per_request"] is False
        assert client.app.state.batcher.prepare is None


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.005)


def _run(scenario, prepare, hold=None, max_queue: int = 100):
    """scenario(batcher, submit) against a MicroBatcher with `prepare` and two worker threads;
    returns (batcher, batches): each batch's names and the rows run_batch got. hold: events
    (started, gate): the batch of "busy" sets `started` and waits for `gate`."""
    batches = []

    def run_batch(rows, names):
        batches.append((list(names), rows.clone()))
        if hold is not None and names[0] == "busy":
            hold[0].set()
            assert hold[1].wait(5.0)
        return list(names)

    async def main():
        batcher = MicroBatcher(
            run_batch, max_batch=8, max_wait_ms=50, max_queue=max_queue, prepare=prepare, threads=2
        )
        batcher.start()
        try:

            def submit(name, value=1.0, k=1):
                names = [f"{name}.{i}" for i in range(k)] if k > 1 else [name]
                return batcher.submit([torch.full((3, 2, 2), value)] * k, names)

            await asyncio.wait_for(scenario(batcher, submit), 5.0)
        finally:
            await batcher.stop()
        return batcher

    return asyncio.run(main()), batches


def test_prepare_runs_per_request_and_batches_get_its_rows():
    alone = []

    def prepare(images, is_alone):
        alone.append(is_alone)
        return images.flatten(1).sum(1, keepdim=True)  # (n, 1): 12 x the value

    started, gate = threading.Event(), threading.Event()

    async def scenario(batcher, submit):
        assert await submit("lone", 1.0) == ["lone"]
        busy = asyncio.ensure_future(submit("busy", 2.0))
        await _until(started.is_set)  # the model holds "busy"
        others = [asyncio.ensure_future(submit(f"r{i}", 3.0 + i)) for i in range(3)]
        await _until(lambda: batcher._queue.qsize() == 3)  # all three encoded meanwhile
        gate.set()
        await asyncio.gather(busy, *others)

    batcher, batches = _run(scenario, prepare, (started, gate))
    names = [n for n, _ in batches]
    assert names[:2] == [["lone"], ["busy"]] and names[2:] == [["r0", "r1", "r2"]]
    for batch_names, rows in batches:
        values = {"lone": 1.0, "busy": 2.0, "r0": 3.0, "r1": 4.0, "r2": 5.0}
        assert rows.tolist() == [[12 * values[n]] for n in batch_names]
    # nothing else ran for the first two; the others were encoded beside the "busy" batch
    assert alone == [True, True, False, False, False]
    assert batcher._queued_images == 0 and batcher._running == 0


def test_a_failing_preparation_answers_500_and_the_others_go_on():
    def prepare(images, alone):
        if images[0, 0, 0, 0] < 0:
            raise RuntimeError("broken encoder")
        return images

    async def scenario(batcher, submit):
        good = asyncio.ensure_future(submit("good"))
        with pytest.raises(ApiError) as failed:
            await submit("bad", -1.0, k=2)
        assert failed.value.status == 500 and str(failed.value) == "model error: broken encoder"
        assert await good == ["good"]
        assert await submit("after") == ["after"]

    batcher, batches = _run(scenario, prepare)
    assert sorted(n for names, _ in batches for n in names) == ["after", "good"]
    assert batcher._queued_images == 0 and batcher._running == 0


def test_images_being_prepared_count_against_the_queue_and_a_give_up_frees_them():
    started, release = threading.Event(), threading.Event()

    def prepare(images, alone):
        started.set()
        release.wait(2.0)
        return images

    async def scenario(batcher, submit):
        slow = asyncio.ensure_future(submit("slow", k=3))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 2.0)
        assert batcher._queued_images == 3
        with pytest.raises(ApiError) as busy:
            await submit("more", k=2)  # 3 + 2 > max_queue 4
        assert busy.value.status == 503
        slow.cancel()  # the request's deadline passed while it was being encoded
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert batcher._queued_images == 0
        assert batcher._running == 1  # its encoding still runs: the next one is not alone
        release.set()
        await _until(lambda: batcher._running == 0)
        assert await submit("next", k=2) == ["next.0", "next.1"]

    batcher, batches = _run(scenario, prepare, max_queue=4)
    assert [names for names, _ in batches] == [["next.0", "next.1"]]
    assert batcher._queued_images == 0 and batcher._running == 0


def test_onnx_runtime_encoder_encodes_per_request_by_default(tiny_reference, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from rnncap.models.onnx_encoder import OnnxEncoder, export_encoder

    captioner = load(make_tiny_model(tmp_path / "tiny"), device="cpu")  # the module's model
    graph = export_encoder(shared_encoder(), tmp_path / "encoder.onnx")
    captioner.model.set_encoder(OnnxEncoder(graph, threads=2))
    paths = example_images()
    with TestClient(create_app(captioner, ServeConfig(timeout=60))) as client:
        assert client.get("/healthz").json()["config"]["encode_per_request"] is True

        def one(path):
            return client.post("/caption?attention=1", files=[_file(path)]).json()["results"][0]

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(one, paths * 2))
    for path, result in zip(paths * 2, results, strict=True):
        _check(result, tiny_reference[path.name])  # ONNX Runtime's features: within 1e-4 of torch's
