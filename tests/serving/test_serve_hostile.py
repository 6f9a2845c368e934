"""The web service against clients that hold its resources: uploads sent all but their last byte
(the bytes held by all requests together are bounded and given back), and connections that send
nothing (closed in time; past a cap the oldest idle one makes room, so clients are answered);
crafted images that trip Pillow's decoders (per-file errors, CaptionError)."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from rnncap.decode.captioner import CaptionError
from rnncap.serving.api_error import ApiError
from rnncap.serving.app import ServeConfig, create_app
from rnncap.serving.bodies import FREE_BYTES, Body, BodyBudget
from support.inference import ServerProcess, crafted_images, example_images, rss_bytes

MB = 1024 * 1024


def test_bodies_fill_memory_then_temporary_files_then_are_refused():
    budget = BodyBudget(memory=100_000, disk=400_000)
    first, second, third = Body(budget), Body(budget), Body(budget)
    sent = {first: bytearray(), second: bytearray()}
    for i in range(6):  # 6 chunks of 40,000 bytes each: past the free part, memory then disk
        for body in (first, second):
            chunk = bytes([i, id(body) % 251]) * 20_000
            body.add(chunk)
            sent[body] += chunk
            assert budget.in_memory <= 100_000 and budget.on_disk <= 400_000
    assert budget.in_memory + budget.on_disk + 2 * FREE_BYTES >= 480_000
    assert first.file is not None or second.file is not None  # some went to disk
    with pytest.raises(ApiError) as refused:
        third.add(bytes(FREE_BYTES))  # the free part is still taken
        third.add(bytes(200_000))
    assert refused.value.status == 503 and "server busy" in refused.value.message
    assert first.read() == sent[first] and second.read() == sent[second]
    for body in (first, second, third):
        body.release()
    assert (budget.in_memory, budget.on_disk) == (0, 0)
    assert budget.peak_in_memory <= 100_000 and budget.peak_on_disk > 0


def test_crafted_images_are_per_file_errors_and_caption_errors(tiny_loaded, tmp_path):
    photo = example_images()[0]
    files = [("file", (name, data, "image/jpeg")) for name, data in crafted_images().items()]
    files.insert(2, ("file", (photo.name, photo.read_bytes(), "IMAGE/JPEG")))
    with TestClient(create_app(tiny_loaded, ServeConfig(timeout=60))) as client:
        response = client.post("/caption", files=files)
        alone = client.post("/caption", files=files[:1])
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["image"] for r in results] == [name for _, (name, _, _) in files]
    for result in results:
        if result["image"] == photo.name:
            assert result["caption"]
        else:
            assert result["status"] in (400, 415), result
            assert result["error"].startswith(result["image"] + ": ")
    assert alone.status_code in (400, 415) and "error" in alone.json()
    for name, data in crafted_images().items():
        (tmp_path / name).write_bytes(data)
        for item in (data, tmp_path / name, str(tmp_path / name)):
            with pytest.raises(CaptionError):
                tiny_loaded(item)


def test_media_types_are_compared_without_regard_to_case(tiny_loaded):
    photo = example_images()[0].read_bytes()
    boundary = "XyZ"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
            "Content-Type: IMAGE/JPEG\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{boundary}--\r\n".encode()
    )
    with TestClient(create_app(tiny_loaded, ServeConfig(timeout=60))) as client:
        raw = client.post("/caption", content=photo, headers={"content-type": "IMAGE/JPEG"})
        multipart = client.post(
            "/caption",
            content=form,
            headers={"content-type": f"Multipart/Form-Data; boundary={boundary}"},
        )
    assert raw.status_code == 200, raw.text
    assert multipart.status_code == 200, multipart.text
    assert raw.json()["results"][0]["caption"] == multipart.json()["results"][0]["caption"]


def test_a_file_named_only_by_rfc5987_filename_star_is_captioned(tiny_loaded):
    photo = example_images()[0].read_bytes()
    boundary = "XyZ"

    def form(disposition: str) -> bytes:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; {disposition}\r\n'
        head += "Content-Type: image/jpeg\r\n\r\n"
        return head.encode() + photo + f"\r\n--{boundary}--\r\n".encode()

    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    names = {
        "filename*=UTF-8''caf%C3%A9.jpg": "café.jpg",
        "filename=\"plain.jpg\"; filename*=utf-8'fr'na%C3%AFve%20%22q%22.jpg": 'naïve "q".jpg',
    }
    with TestClient(create_app(tiny_loaded, ServeConfig(timeout=60))) as client:
        for disposition, name in names.items():
            response = client.post("/caption", content=form(disposition), headers=headers)
            assert response.status_code == 200, response.text
            result = response.json()["results"][0]
            assert result["image"] == name and result["caption"], result


def _held_upload(port: int, size: int) -> socket.socket:
    """An upload of `size` bytes sent but for its last byte: the server waits for it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(
        b"POST /caption HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: %d\r\n\r\n" % size + bytes(size - 1)
    )
    return s


def _caption(url: str, timeout: float = 30) -> httpx.Response:
    photo = example_images()[0]
    files = [("file", (photo.name, photo.read_bytes(), "image/jpeg"))]
    return httpx.post(f"{url}/caption", files=files, timeout=timeout)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    server = ServerProcess(
        model_dir, log, "--body-timeout", "60", "--timeout", "90", open_files=256
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_held_uploads_cost_a_bounded_memory_given_back(server):
    for _ in range(3):  # warm up: the first captions allocate the model's buffers
        assert _caption(server.url).status_code == 200
    time.sleep(0.5)
    before = rss_bytes(server.pid)
    held = [_held_upload(server.port, 4 * MB) for _ in range(40)]  # 160 MB sent, unfinished
    try:
        time.sleep(2.0)  # the server reads what arrived
        uploads = httpx.get(f"{server.url}/healthz", timeout=10).json()["uploads"]
        assert uploads["bytes_in_memory"] <= 64 * MB and uploads["bytes_on_disk"] > 0
        peak = rss_bytes(server.pid)
        assert _caption(server.url).status_code == 200  # still answered
    finally:
        for s in held:
            s.close()
    time.sleep(2.0)
    after = rss_bytes(server.pid)
    uploads = httpx.get(f"{server.url}/healthz", timeout=10).json()["uploads"]
    assert (uploads["bytes_in_memory"], uploads["bytes_on_disk"]) == (0, 0)
    assert peak - before < 100 * MB, (before, peak)  # unbounded: 160 MB and more
    assert after - before < 40 * MB, (before, after)  # and the memory went back


def test_idle_connections_neither_exhaust_descriptors_nor_outlive_the_header_timeout(server):
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(300)]
    try:
        started = time.monotonic()
        assert _caption(server.url, timeout=5).status_code == 200  # 256 descriptors at most
        assert time.monotonic() - started < 2.0
        survivor = idle[-1]  # the newest: kept until the header timeout (5 s)
        survivor.settimeout(8.0)
        assert survivor.recv(1) == b""  # closed by the server
        assert time.monotonic() - started < 8.0
    finally:
        for s in idle:
            s.close()
    assert "Too many open files" not in server.output()
