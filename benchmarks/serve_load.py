"""Requests/s of `rnncap serve` with 1 and with 16 concurrent clients on loopback.

Starts the server as a subprocess, sends one sample photo per request (multipart), and prints
requests/s and latency for each concurrency; the reference is the same server with micro-batching
off (--max-batch 1), measured in the same run. All servers start first; the measurements then
take turns (every server once per repeat) and each row shows the median, so a slow minute of the
machine does not fall on one server only.

The load generator runs on the same cores as the server, so it is kept cheap: each client thread
holds one keep-alive connection and sends requests built once (`--client socket`, about 0.1 ms of
CPU a request). `--client httpx` builds every request with httpx instead (about 5 ms a request).
The table shows the client's CPU time a request beside each row.

Usage: python benchmarks/serve_load.py [--requests 64] [--repeats 3] [--model default]
       [--backend torch onnx onnx:batch runtime] [--client socket|httpx] [--runtime-venv DIR]
A backend may name the server's --encode after a colon: onnx:batch encodes whole batches with
ONNX Runtime, torch:request each request with torch.
The backend `runtime` is `rnncap serve` from a venv without torch (`pip install rnncap[serve]`:
encoder.onnx in ONNX Runtime, the decoder in NumPy): the wheel of this tree is built and
installed into a fresh venv as benchmarks/runtime_install.py does, unless --runtime-venv names
one; the other servers run from the environment running this script.
Without the bundled model an untrained model of the default size is saved to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from runtime_install import PLAIN, make_runtime_venv

REPO = Path(__file__).resolve().parents[1]
PHOTOS = sorted((REPO / "examples").glob("*.jpg"))
BACKENDS = ("auto", "onnx", "torch", "runtime")  # runtime: the torch-free install's server


def model_folder(spec: str, scratch: Path) -> str:
    from rnncap.models.folder import resolve_model_dir

    try:
        resolve_model_dir(spec)
        return spec
    except FileNotFoundError as error:
        print(f"note: {error}; using an untrained model of the default size")
    import torch

    from rnncap.data.vocab import Vocabulary
    from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN
    from rnncap.models.folder import save_model

    torch.manual_seed(0)
    vocab = Vocabulary([f"word{i}" for i in range(2500)])
    model = CaptioningRNN(CaptionerConfig(vocab_size=len(vocab)))
    return str(save_model(scratch / "untrained", model, vocab))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    model: str,
    device: str,
    max_batch: int,
    threads: int | None,
    backend: str = "auto",
    beam: int | None = None,
    runtime_venv: Path | None = None,
) -> tuple[subprocess.Popen, str]:
    """`rnncap serve` on a free port; `backend` is BACKEND or BACKEND:ENCODE (see --backend).
    The backend runtime runs `runtime_venv`'s rnncap (no --backend: auto is the runtime there),
    without the PYTHONPATH of this environment."""
    port = free_port()
    backend, _, encode = backend.partition(":")
    if backend == "runtime":
        command, env = [str(runtime_venv / "bin" / "rnncap"), "serve"], dict(PLAIN)
    else:
        command = [sys.executable, "-m", "rnncap.cli", "serve", "--backend", backend]
        env = dict(os.environ)
    command += ["--model", model, "--port", str(port), "--device", device]
    command += ["--max-batch", str(max_batch), "--timeout", "600"]
    command += ["--encode", encode] if encode else []
    command += ["--beam", str(beam)] if beam else []
    env.update({"OMP_NUM_THREADS": str(threads)} if threads else {})
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"server exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit("server did not start")


def multipart_request(host: str, name: str, data: bytes) -> bytes:
    """The bytes of one POST /caption with `data` as the multipart field "file"."""
    boundary = uuid.uuid4().hex
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
    body = (part + "Content-Type: image/jpeg\r\n\r\n").encode() + data
    body += f"\r\n--{boundary}--\r\n".encode()
    head = f"POST /caption HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
    head += f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
    return head.encode() + body


def read_response(sock: socket.socket, pending: bytes) -> tuple[int, bytes, bytes]:
    """One HTTP/1.1 response with a Content-Length: (status, body, bytes read past it)."""
    while b"\r\n\r\n" not in pending:
        pending += _receive(sock)
    head, _, rest = pending.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    fields = {k.strip().lower(): v for k, _, v in (line.partition(b":") for line in lines[1:])}
    if b"content-length" not in fields:
        raise RuntimeError(f"HTTP {status} response without a Content-Length: {head[:200]!r}")
    length = int(fields[b"content-length"])
    while len(rest) < length:
        rest += _receive(sock)
    return status, rest[:length], rest[length:]


def _receive(sock: socket.socket) -> bytes:
    chunk = sock.recv(1 << 16)
    if not chunk:
        raise ConnectionError("the server closed the connection")
    return chunk


def socket_client(url: str, requests: list[bytes], order: range) -> list[float]:
    """Sends requests[i % len] for each i in `order` over one keep-alive connection; latencies."""
    host, port = url.removeprefix("http://").split(":")
    latencies, pending = [], b""
    with socket.create_connection((host, int(port)), timeout=600) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in order:
            start = time.perf_counter()
            sock.sendall(requests[i % len(requests)])
            status, body, pending = read_response(sock, pending)
            if status != 200:
                raise RuntimeError(f"request {i}: HTTP {status}: {body[:200]!r}")
            latencies.append(time.perf_counter() - start)
    return latencies


def httpx_client(url: str, photos: list[tuple[str, bytes]], order: range) -> list[float]:
    latencies = []
    with httpx.Client(base_url=url, timeout=600) as http:
        for i in order:
            name, data = photos[i % len(photos)]
            start = time.perf_counter()
            response = http.post("/caption", files={"file": (name, data, "image/jpeg")})
            response.raise_for_status()
            latencies.append(time.perf_counter() - start)
    return latencies


def load(url: str, clients: int, requests: int, kind: str = "socket") -> tuple[float, list[float]]:
    """Seconds for `requests` POSTs from `clients` threads, and each request's latency."""
    photos = [(p.name, p.read_bytes()) for p in PHOTOS]
    host = url.removeprefix("http://")
    built = [multipart_request(host, name, data) for name, data in photos]

    def client(worker: int) -> list[float]:
        order = range(worker, requests, clients)
        if kind == "httpx":
            return httpx_client(url, photos, order)
        return socket_client(url, built, order)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [t for part in pool.map(client, range(clients)) for t in part]
    return time.perf_counter() - start, latencies


def measure(servers: dict, args) -> list[tuple]:
    """Rows (backend, max_batch, clients, median seconds, latencies, batch stats, client CPU s):
    each server is warmed up, then every (server, clients) pair is measured once per repeat, in
    turn."""
    samples: dict[tuple, list] = {}
    labels = {}
    for key, (_, url) in servers.items():
        encode = key[0].partition(":")[2]
        label = httpx.get(f"{url}/healthz").json().get("backend", key[0].partition(":")[0])
        labels[key] = f"{label}:{encode}" if encode else label
        load(url, args.clients, 2 * args.clients, args.client)  # warm-up
    for _ in range(args.repeats):
        for key, (_, url) in servers.items():
            for clients in (1, args.clients):
                before = httpx.get(f"{url}/healthz").json()["batches"]
                cpu = time.process_time()  # this process: the load generator's threads
                seconds, latencies = load(url, clients, args.requests, args.client)
                cpu = time.process_time() - cpu
                after = httpx.get(f"{url}/healthz").json()["batches"]
                stats = {k: after[k] - before[k] for k in ("images", "batches")}
                samples.setdefault((*key, clients), []).append((seconds, latencies, stats, cpu))
    rows = []
    for (backend, max_batch, clients), runs in samples.items():
        seconds = statistics.median(run[0] for run in runs)
        latencies = [t for run in runs for t in run[1]]
        stats = {k: sum(run[2][k] for run in runs) for k in ("images", "batches")}
        cpu = sum(run[3] for run in runs) / len(runs)
        row = (labels[backend, max_batch], max_batch, clients, seconds, latencies, stats, cpu)
        rows.append(row)
    return rows


def backend_spec(text: str) -> str:
    """BACKEND or BACKEND:ENCODE, checked: auto|onnx|torch|runtime, then request|batch."""
    backend, colon, encode = text.partition(":")
    if backend not in BACKENDS or (colon and encode not in ("request", "batch")):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected auto, onnx, torch or runtime, optionally :request or :batch"
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model spec (default: default)")
    parser.add_argument("--device", default="cpu", help="server device (default: cpu)")
    parser.add_argument("--requests", type=int, default=64, help="requests per measurement")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--threads", type=int, default=None, help="server's torch threads")
    parser.add_argument(
        "--backend",
        nargs="+",
        default=["auto"],
        type=backend_spec,
        help="server --backend, one measurement each, optionally with its --encode after a "
        "colon (e.g. torch onnx onnx:batch); runtime: the server of a torch-free venv "
        "(default: auto)",
    )
    parser.add_argument(
        "--runtime-venv",
        type=Path,
        help="an existing venv with rnncap[serve] and no torch for the backend runtime "
        "(default: one made in a temporary folder from the wheel of this tree)",
    )
    parser.add_argument(
        "--beam", type=int, default=None, help="server --beam (default: the model's setting)"
    )
    parser.add_argument(
        "--client",
        default="socket",
        choices=("socket", "httpx"),
        help="load generator: pre-built requests on raw keep-alive sockets, or httpx "
        "(default: socket)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="measurements per row, taken in turn across the servers; the median is shown "
        "(default: 3)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        model = model_folder(args.model, Path(scratch))
        runtime = args.runtime_venv
        if runtime is None and any(b.partition(":")[0] == "runtime" for b in args.backend):
            print("building the runtime venv (the wheel of this tree, rnncap[serve], no torch)")
            runtime = make_runtime_venv(Path(scratch) / "runtime", extras="serve")
        servers = {}  # (backend, max_batch) -> (process, url); all up, idle but one at a time
        try:
            for backend in args.backend:
                for max_batch in (16, 1):
                    servers[backend, max_batch] = start_server(
                        model, args.device, max_batch, args.threads, backend, args.beam, runtime
                    )
            rows = measure(servers, args)
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait()

    print(
        f"{args.requests} requests per measurement, median of {args.repeats}, "
        f"device {args.device}, "
        f"server threads {args.threads or 'default'}, beam {args.beam or 'of the model'}, "
        f"one photo per request, client {args.client}"
    )
    header = f"{'backend':<14}{'max-batch':>9}{'clients':>9}{'requests/s':>12}{'p50 ms':>9}"
    print(header + f"{'p95 ms':>9}{'images/batch':>14}{'client CPU ms/req':>19}")
    for backend, max_batch, clients, seconds, latencies, stats, cpu in rows:
        latencies.sort()
        p95 = latencies[int(0.95 * (len(latencies) - 1))]
        rate = args.requests / seconds
        mean_batch = stats["images"] / max(stats["batches"], 1)
        print(
            f"{backend:<14}{max_batch:>9}{clients:>9}{rate:>12.1f}"
            f"{1000 * statistics.median(latencies):>9.0f}{1000 * p95:>9.0f}{mean_batch:>14.1f}"
            f"{1000 * cpu / args.requests:>19.2f}"
        )
    seconds = {(r[0], r[1], r[2]): r[3] for r in rows}
    for backend in dict.fromkeys(r[0] for r in rows):
        one, batched = seconds[backend, 16, 1], seconds[backend, 16, args.clients]
        unbatched = seconds[backend, 1, args.clients]
        print(
            f"{backend}: ratio {args.clients} clients / 1 client (micro-batching on): "
            f"{one / batched:.2f}; micro-batching on / off at {args.clients} clients: "
            f"{unbatched / batched:.2f}"
        )
    backends = list(dict.fromkeys(r[0] for r in rows))
    for backend in backends[1:]:  # each backend against the first, micro-batching on
        ratios = [seconds[backends[0], 16, c] / seconds[backend, 16, c] for c in (1, args.clients)]
        print(
            f"{backend} / {backends[0]} requests/s: {ratios[0]:.2f}x at 1 client, "
            f"{ratios[1]:.2f}x at {args.clients} clients"
        )


if __name__ == "__main__":
    main()
