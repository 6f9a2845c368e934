"""The web service in-process: captions equal one-by-one decoding, limits answer 413/415/400/504
with a JSON error, and the micro-batcher groups concurrent requests without mixing results."""

from __future__ import annotations

import asyncio
import threading

import pytest
from fastapi.testclient import TestClient

from rnncap.cli.serve import parse_size
from rnncap.serving.api_error import ApiError
from rnncap.serving.app import ServeConfig, create_app
from rnncap.serving.batcher import MicroBatcher
from support.inference import bomb_png, example_images, truncated_jpeg

MAX_BYTES = 200_000


@pytest.fixture(scope="module")
def client(tiny_loaded):
    config = ServeConfig(max_batch=4, max_wait_ms=5, max_bytes=MAX_BYTES, timeout=60)
    with TestClient(create_app(tiny_loaded, config)) as client:
        yield client


def _file(path, name=None):
    return ("file", (name or path.name, path.read_bytes(), "image/jpeg"))


def test_healthz_and_page(client):
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["cell_type"] == "attn"
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'type="file"' in page.text and 'id="caption"' in page.text


def test_one_image_with_attention(client, tiny_reference):
    path = example_images()[0]
    response = client.post("/caption?attention=1", files=[_file(path)])
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    caption, score, attention = tiny_reference[path.name]
    assert result["image"] == path.name
    assert result["caption"] == caption
    assert result["score"] == pytest.approx(score, abs=1e-3)
    assert result["words"] == caption.split()
    assert result["grid"] == [7, 7]
    assert len(result["attention"]) == len(result["words"])
    for row, expected in zip(result["attention"], attention.tolist(), strict=True):
        assert row == pytest.approx(expected, abs=1e-4)
        assert sum(row) == pytest.approx(1.0, abs=1e-3)


def test_several_images_in_one_request_keep_their_order(client, tiny_reference):
    paths = example_images()
    response = client.post("/caption", files=[_file(p) for p in reversed(paths)])
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["image"] for r in results] == [p.name for p in reversed(paths)]
    assert [r["caption"] for r in results] == [tiny_reference[p.name][0] for p in reversed(paths)]
    assert "attention" not in results[0]


def test_raw_image_body(client, tiny_reference):
    path = example_images()[1]
    response = client.post(
        "/caption", content=path.read_bytes(), headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["caption"] == tiny_reference[path.name][0]


def _error(response, status, needle):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert needle in response.json()["error"]


def test_bad_uploads_get_json_errors(client, tmp_path):
    text = ("notes.jpg", b"this is not an image\n", "image/jpeg")
    _error(client.post("/caption", files=[("file", text)]), 415, "notes.jpg: not an image")
    truncated = truncated_jpeg(tmp_path / "cut.jpg")
    _error(client.post("/caption", files=[_file(truncated)]), 400, "cut.jpg: cannot read image")
    empty = ("empty.jpg", b"", "image/jpeg")
    _error(client.post("/caption", files=[("file", empty)]), 400, "empty")
    bomb = bomb_png(tmp_path / "bomb.png")
    _error(client.post("/caption", files=[_file(bomb)]), 413, "decompression bomb")
    _error(client.post("/caption", data={"text": "hello"}), 400, "no image file")
    _error(
        client.post("/caption", content=b"{}", headers={"content-type": "application/json"}),
        415,
        "multipart",
    )
    _error(client.post("/caption?attention=maybe", files=[_file(truncated)]), 422, "attention")
    _error(client.get("/nothing-here"), 404, "Not Found")
    # several files: a bad one is an error entry beside the good captions
    good = example_images()[0]
    response = client.post("/caption", files=[_file(good), ("file", text)])
    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert first["image"] == good.name and first["caption"]
    assert second == {
        "image": "notes.jpg",
        "error": "notes.jpg: not an image (unknown or unsupported format)",
        "status": 415,
    }


def test_size_limit_from_header_and_while_reading(client):
    big = bytes(MAX_BYTES + 1)
    _error(client.post("/caption", files=[("file", ("big.jpg", big, "image/jpeg"))]), 413, "limit")

    def chunks():  # no Content-Length: the limit must hold while the body streams in
        for _ in range(10):
            yield bytes(MAX_BYTES // 4)

    response = client.post("/caption", content=chunks(), headers={"content-type": "image/jpeg"})
    _error(response, 413, "limit")


def test_timeout_answers_504_and_the_server_recovers(tiny_loaded, tiny_reference):
    config = ServeConfig(max_wait_ms=1, timeout=0.01)
    with TestClient(create_app(tiny_loaded, config)) as client:
        path = example_images()[0]
        _error(client.post("/caption", files=[_file(path)]), 504, "timeout")
    with TestClient(create_app(tiny_loaded, ServeConfig())) as client:
        response = client.post("/caption", files=[_file(path)])
        assert response.json()["results"][0]["caption"] == tiny_reference[path.name][0]


def test_micro_batcher_groups_requests_and_routes_results():
    calls = []

    def run_batch(images, names):
        calls.append(list(names))
        return [f"result {n}" for n in names]

    async def scenario():
        batcher = MicroBatcher(run_batch, max_batch=4, max_wait_ms=50, max_queue=100)
        batcher.start()
        import torch

        jobs = [
            batcher.submit([torch.zeros(3, 2, 2)] * k, [f"{i}.{j}" for j in range(k)])
            for i, k in enumerate([1, 2, 1, 3, 1, 6, 1])
        ]
        results = await asyncio.gather(*jobs)
        with pytest.raises(ApiError) as busy:
            await batcher.submit([torch.zeros(3, 2, 2)] * 101, ["x"] * 101)
        await batcher.stop()
        return results, busy.value

    results, busy = asyncio.run(scenario())
    for i, (k, result) in enumerate(zip([1, 2, 1, 3, 1, 6, 1], results, strict=True)):
        assert result == [f"result {i}.{j}" for j in range(k)]
    assert sorted(n for call in calls for n in call) == sorted(
        f"{i}.{j}" for i, k in enumerate([1, 2, 1, 3, 1, 6, 1]) for j in range(k)
    )
    assert len(calls) < 7  # requests were grouped
    assert all(len(c) <= 4 for c in calls if "5.0" not in c)  # only the 6-image job is larger
    assert ["5.0", "5.1", "5.2", "5.3", "5.4", "5.5"] in calls  # ... and runs on its own
    assert busy.status == 503


def _batcher_scenario(scenario, gate: threading.Event | None = None):
    """Runs `scenario(batcher, submit)` against a MicroBatcher that records each batch's names;
    fails if it takes 2 s (a batch that waited its full `max_wait_ms`, 5 s, would). With a
    `gate`, the model call for "busy" holds the model until the gate opens."""
    import torch

    calls = []

    def run_batch(images, names):
        calls.append(list(names))
        if gate is not None and names == ["busy"]:
            gate.wait(2.0)
        return list(names)

    async def main():
        batcher = MicroBatcher(run_batch, max_batch=8, max_wait_ms=5000)
        batcher.start()
        try:
            image = torch.zeros(3, 2, 2)
            await asyncio.wait_for(
                scenario(
                    batcher, lambda name, arrival=None: batcher.submit([image], [name], arrival)
                ),
                2.0,
            )
        finally:
            await batcher.stop()
        return batcher

    return asyncio.run(main()), calls


def test_lone_request_on_an_idle_server_does_not_wait():
    async def scenario(batcher, submit):
        assert await submit("alone") == ["alone"]

    _, calls = _batcher_scenario(scenario)
    assert calls == [["alone"]]


def test_idle_batch_waits_for_a_request_being_read():
    async def scenario(batcher, submit):
        with batcher.arriving() as arrival:  # being read and decoded
            first = asyncio.ensure_future(submit("first"))
            await asyncio.sleep(0.2)
            assert not first.done()  # the batch waits for the one on its way ...
            await submit("second", arrival)
        await first

    batcher, calls = _batcher_scenario(scenario)
    assert calls == [["first", "second"]]  # ... and both share one model call
    assert batcher._arriving == 0 and batcher._markers == 0


def test_idle_batch_stops_waiting_when_an_arrival_gives_up():
    async def scenario(batcher, submit):
        first = asyncio.ensure_future(submit("first"))
        with batcher.arriving():
            await asyncio.sleep(0.2)
            assert not first.done()
        await first  # the other request failed (e.g. a bad image): the batch goes alone

    batcher, calls = _batcher_scenario(scenario)
    assert calls == [["first"]]
    assert batcher._arriving == 0 and batcher._markers == 0


def test_requests_queued_around_a_give_up_share_one_batch():
    """A request that gives up while the model is busy leaves a wake-up behind in the queue;
    the requests queued before and after it still go together."""
    gate = threading.Event()

    async def scenario(batcher, submit):
        busy = asyncio.ensure_future(submit("busy"))
        await asyncio.sleep(0.1)  # the model holds "busy"
        a = asyncio.ensure_future(submit("A"))
        await asyncio.sleep(0.01)
        with batcher.arriving():
            pass  # read, then refused (a bad image): never queued
        c = asyncio.ensure_future(submit("C"))
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(busy, a, c)

    batcher, calls = _batcher_scenario(scenario, gate=gate)
    assert calls == [["busy"], ["A", "C"]]
    assert batcher._arriving == 0 and batcher._markers == 0


def test_a_left_over_wake_up_does_not_stop_the_wait_for_an_arrival():
    gate = threading.Event()

    async def scenario(batcher, submit):
        busy = asyncio.ensure_future(submit("busy"))
        await asyncio.sleep(0.1)
        a = asyncio.ensure_future(submit("A"))
        await asyncio.sleep(0.01)
        with batcher.arriving():
            pass  # a wake-up queued behind A
        with batcher.arriving() as arrival:  # B is being read when the model frees up
            gate.set()
            await asyncio.sleep(0.2)
            assert not a.done()  # A's batch waits for B ...
            await submit("B", arrival)
        await asyncio.gather(busy, a)

    _, calls = _batcher_scenario(scenario, gate=gate)
    assert calls == [["busy"], ["A", "B"]]  # ... and they share one model call


def test_no_request_stays_counted_as_arriving(client, tmp_path):
    """Every request, answered or refused, stops counting as on its way to the queue."""
    good = example_images()[0]
    assert client.post("/caption", files=[_file(good)]).status_code == 200
    assert client.post("/caption", files=[("file", ("x.jpg", b"junk", "image/jpeg"))]).status_code
    assert client.post("/caption", files=[_file(good)] * 2).status_code == 200
    assert client.app.state.batcher._arriving == 0


def test_search_runs_on_search_threads_and_the_encoder_on_all(
    tiny_loaded, tiny_reference, monkeypatch
):
    """ServeConfig.search_threads: the beam search on that many torch threads, the encoder on
    the process's count, which comes back after every batch (also when the search fails)."""
    import torch

    seen = []

    def recording(method):
        def call(*args, **kwargs):
            seen.append((method.__name__, torch.get_num_threads()))
            return method(*args, **kwargs)

        return call

    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(tiny_loaded, "encode_images", recording(tiny_loaded.encode_images))
        monkeypatch.setattr(
            tiny_loaded, "caption_features", recording(tiny_loaded.caption_features)
        )
        path = example_images()[0]
        for threads, search_sees in ((1, 1), (None, 2)):
            seen.clear()
            config = ServeConfig(max_wait_ms=0, timeout=60, search_threads=threads)
            with TestClient(create_app(tiny_loaded, config)) as client:
                response = client.post("/caption", files=[_file(path)])
            assert response.status_code == 200, response.text
            assert response.json()["results"][0]["caption"] == tiny_reference[path.name][0]
            assert seen == [("encode_images", 2), ("caption_features", search_sees)]
            assert torch.get_num_threads() == 2

        def failing(*args, **kwargs):
            raise RuntimeError("search failed")

        search = tiny_loaded.caption_features
        monkeypatch.setattr(tiny_loaded, "caption_features", failing)
        with TestClient(create_app(tiny_loaded, ServeConfig(max_wait_ms=0, timeout=60))) as client:
            response = client.post("/caption", files=[_file(path)])
            assert response.status_code == 500 and "search failed" in response.text
            monkeypatch.setattr(tiny_loaded, "caption_features", search)
            seen.clear()
            assert client.post("/caption", files=[_file(path)]).status_code == 200
        assert seen == [("encode_images", 2), ("caption_features", 1)]  # restored after it
    finally:
        torch.set_num_threads(saved)


def test_search_threads_flag_is_checked(capsys):
    from rnncap.cli import main

    assert main(["serve", "--search-threads", "-1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "rnncap: error: --search-threads must be 0 (all the model's threads) or more"


def test_parse_size():
    assert parse_size("10MB") == 10 * 1024**2
    assert parse_size("512kb") == 512 * 1024
    assert parse_size("1000") == 1000
    with pytest.raises(Exception, match="not a size"):
        parse_size("ten")
