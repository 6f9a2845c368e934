"""Load: 200 requests from 16 concurrent clients against `rnncap serve` on loopback, all answered
200 with the right caption, and the server's memory stable.

Memory rule: the server's resident set size (VmRSS) after the 200 requests is at most
1.1 x its RSS after a warm-up round (32 requests, same concurrency) + 100 MB
(without `release_free_memory` in the server, glibc kept ~300 MB more after 200 requests).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from support.inference import ServerProcess, example_images, make_tiny_model, rss_bytes

CLIENTS = 16
REQUESTS = 200
WARM_UP = 32


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("load")
    server = ServerProcess(
        make_tiny_model(folder / "tiny"), folder / "server.log", "--max-batch", "16"
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _hammer(url: str, count: int) -> list[tuple[int, str, str]]:
    """`count` POSTs spread over CLIENTS threads, each with its own connection."""
    photos = [(p.name, p.read_bytes()) for p in example_images()]

    def client(worker: int) -> list[tuple[int, str, str]]:
        out = []
        with httpx.Client(base_url=url, timeout=120) as http:
            for i in range(worker, count, CLIENTS):
                name, data = photos[i % len(photos)]
                response = http.post("/caption", files={"file": (name, data, "image/jpeg")})
                body = response.json()
                caption = body["results"][0]["caption"] if response.status_code == 200 else ""
                out.append((response.status_code, name, caption or body.get("error", "")))
        return out

    with ThreadPoolExecutor(CLIENTS) as pool:
        return [r for part in pool.map(client, range(CLIENTS)) for r in part]


@pytest.mark.slow
def test_200_requests_16_clients_all_ok_memory_stable(server):
    warm = _hammer(server.url, WARM_UP)
    assert all(status == 200 for status, _, _ in warm), warm
    expected = {name: caption for _, name, caption in warm}  # one caption per photo
    rss_warm = rss_bytes(server.pid)

    results = _hammer(server.url, REQUESTS)
    rss_after = rss_bytes(server.pid)
    assert len(results) == REQUESTS
    assert [s for s, _, _ in results if s != 200] == [], server.output()
    assert all(caption == expected[name] for _, name, caption in results)
    limit = 1.1 * rss_warm + 100 * 2**20
    print(f"server RSS: {rss_warm / 2**20:.0f} MB after warm-up, {rss_after / 2**20:.0f} MB after")
    assert rss_after <= limit, (
        f"server RSS grew from {rss_warm / 2**20:.0f} MB after warm-up to "
        f"{rss_after / 2**20:.0f} MB after {REQUESTS} requests (limit {limit / 2**20:.0f} MB)"
    )
    stats = httpx.get(f"{server.url}/healthz", timeout=10).json()["batches"]
    assert stats["requests"] == WARM_UP + REQUESTS
    assert stats["batches"] < stats["requests"]  # concurrent requests shared model calls


def _serve_load():
    import importlib.util
    import sys

    benchmarks = Path(__file__).resolve().parents[2] / "benchmarks"
    if str(benchmarks) not in sys.path:  # serve_load imports its sibling runtime_install
        sys.path.append(str(benchmarks))
    spec = importlib.util.spec_from_file_location("serve_load", benchmarks / "serve_load.py")
    serve_load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve_load)
    return serve_load


@pytest.mark.slow
def test_benchmark_socket_client_reads_what_httpx_reads(server):
    """benchmarks/serve_load.py's load generator writes multipart requests and reads responses on
    raw keep-alive sockets; the same photo gives the same body as through httpx, request after
    request on one connection, and a rejected upload is an error, not a silent success."""
    import socket

    serve_load = _serve_load()

    photos = example_images()[:2]
    host = server.url.removeprefix("http://")
    with httpx.Client(base_url=server.url, timeout=120) as http:
        expected = [
            http.post("/caption", files={"file": (p.name, p.read_bytes(), "image/jpeg")}).json()
            for p in photos
        ]
    built = [serve_load.multipart_request(host, p.name, p.read_bytes()) for p in photos]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        pending = b""
        for request, want in 2 * list(zip(built, expected, strict=True)):
            sock.sendall(request)
            status, body, pending = serve_load.read_response(sock, pending)
            assert status == 200
            assert json.loads(body) == want
    assert len(serve_load.socket_client(server.url, built, range(5))) == 5
    junk = serve_load.multipart_request(host, "junk.jpg", b"not an image")
    with pytest.raises(RuntimeError, match="HTTP 415"):
        serve_load.socket_client(server.url, [junk], range(1))


@pytest.mark.slow
def test_benchmark_starts_a_server_with_the_encode_it_names(tmp_path):
    """A --backend of serve_load.py may carry the server's --encode after a colon."""
    import argparse

    serve_load = _serve_load()
    assert serve_load.backend_spec("onnx:batch") == "onnx:batch"
    for bad in ("onnx:sometimes", "tf", "torch:"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected auto, onnx, torch or"):
            serve_load.backend_spec(bad)
    model = make_tiny_model(tmp_path / "tiny")
    process, url = serve_load.start_server(str(model), "cpu", 4, 1, "torch:request")
    try:
        health = httpx.get(f"{url}/healthz", timeout=10).json()
        assert health["backend"] == "torch" and health["config"]["encode_per_request"] is True
        photo = example_images()[0]
        response = httpx.post(
            f"{url}/caption", files={"file": (photo.name, photo.read_bytes())}, timeout=120
        )
        assert response.status_code == 200 and response.json()["results"][0]["caption"]
    finally:
        process.terminate()
        process.wait()
