"""The web service under hostile traffic: decoded pixels capped per request and in flight, the
deadline covering decoding, per-file results, HEAD, /healthz without paths; and, against a real
`rnncap serve`, 413 for clients that send everything first, 408 and a closed socket for stalled
uploads, one log line per vanished client."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request

import pytest
from fastapi.testclient import TestClient

from rnncap.decode.captioner import load
from rnncap.serving.app import ServeConfig, create_app
from rnncap.serving.uploads import PixelBudget
from support.inference import (
    ServerProcess,
    bomb_png,
    example_images,
    shared_encoder,
)


@pytest.fixture(scope="module")
def captioner(model_dir):
    captioner = load(model_dir, device="cpu")
    captioner.model.set_encoder(shared_encoder())
    return captioner


def _file(path, name=None):
    return ("file", (name or path.name, path.read_bytes(), "image/jpeg"))


def test_per_file_results_and_the_request_pixel_cap(captioner, tmp_path):
    photos = example_images()  # 400 x 400 and 400 x 266: 106,400 to 160,000 pixels each
    config = ServeConfig(max_request_pixels=300_000)
    with TestClient(create_app(captioner, config)) as client:
        files = [_file(photos[0]), _file(bomb_png(tmp_path / "bomb.png")), _file(photos[2])]
        files += [_file(photos[1])]
        response = client.post("/caption", files=files)
    assert response.status_code == 200, response.text
    good, bomb, second, over = response.json()["results"]
    assert good["image"] == photos[0].name and good["caption"]
    assert bomb["status"] == 413 and "decompression bomb" in bomb["error"]
    assert second["image"] == photos[2].name and second["caption"]
    assert over == {
        "image": photos[1].name,
        "error": f"{photos[1].name}: not decoded, the request's images exceed 300,000 pixels "
        "in all (send fewer per request)",
        "status": 413,
    }


def test_the_request_timeout_covers_decoding(captioner, monkeypatch):
    def slow(image):
        time.sleep(2.0)
        return prepare(image)

    prepare = captioner.preprocess
    monkeypatch.setattr(captioner, "preprocess", slow)
    with TestClient(create_app(captioner, ServeConfig(timeout=0.5))) as client:
        started = time.monotonic()
        response = client.post("/caption", files=[_file(example_images()[0])])
        elapsed = time.monotonic() - started
    assert response.status_code == 504 and "timeout" in response.json()["error"]
    assert elapsed < 1.8  # answered at the deadline, not after the decoding


def test_head_and_healthz_without_paths(captioner, model_dir):
    with TestClient(create_app(captioner, ServeConfig(), model_name=str(model_dir))) as client:
        for path in ("/", "/healthz"):
            head = client.head(path)
            assert head.status_code == 200 and head.content == b""
        photo = next(p for p in example_images() if p.name == "astronaut.jpg")  # 400 x 400
        assert client.post("/caption", files=[_file(photo)]).status_code == 200
        health = client.get("/healthz").json()
    assert health["model"] == model_dir.name
    assert str(model_dir.parent) not in str(health)
    assert health["decoding"] == {"pixels_in_flight": 0, "peak_pixels_in_flight": 160_000}


def test_pixel_budget_is_first_come_first_served_and_survives_cancellation():
    async def scenario():
        budget = PixelBudget(100)
        order = []

        async def take(name, pixels, hold):
            held = await budget.acquire(pixels)
            order.append(name)
            await asyncio.sleep(hold)
            budget.release(held)

        first = asyncio.create_task(take("a", 60, 0.05))
        await asyncio.sleep(0)
        waiting = asyncio.create_task(take("b", 80, 0))
        giving_up = asyncio.create_task(take("c", 500, 0))  # larger than the budget: runs alone
        await asyncio.sleep(0.01)
        assert budget.used == 60
        waiting.cancel()
        await asyncio.gather(first, giving_up, waiting, return_exceptions=True)
        return order, budget

    order, budget = asyncio.run(scenario())
    assert order == ["a", "c"] and budget.used == 0 and budget.peak == 100


# ------------------------------------------------------------------------ a real server
@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    server = ServerProcess(model_dir, log, "--max-bytes", "100KB", "--body-timeout", "1")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _partial_upload(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(
        b"POST /caption HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 50000\r\n\r\n" + bytes(500)
    )
    return s


def test_oversized_body_from_a_client_that_sends_everything_first(server):
    request = urllib.request.Request(
        f"{server.url}/caption", data=bytes(300_000), headers={"content-type": "image/jpeg"}
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=30)
    assert answer.value.code == 413
    assert b"exceeds the 102400 byte limit" in answer.value.read()


def test_stalled_uploads_get_408_and_are_closed(server):
    sockets = [_partial_upload(server.port) for _ in range(8)]
    started = time.monotonic()
    for s in sockets:
        with s:
            answer = b""
            while chunk := s.recv(4096):  # returns b"" once the server has closed
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert b"request body not received for 1 s (500 bytes arrived)" in answer
    assert time.monotonic() - started < 6


def test_a_vanished_client_is_one_log_line(server):
    before = server.output().count("\n")
    for _ in range(3):
        _partial_upload(server.port).close()
    time.sleep(1.0)
    new = server.output().splitlines()[before:]
    gone = [line for line in new if "client disconnected after sending 500 bytes" in line]
    assert len(gone) == 3, new
    assert not any("Traceback" in line for line in new)
    assert len(new) == 3, new
