"""Soak test of `rnncap serve` on loopback: a bounded mix of good and hostile requests, with the
server's memory sampled throughout.

16 clients (threads) send N requests: good photos, near-limit PNGs (9400 x 9400, ~100 KB on the
wire, 88 M pixels decoded), junk files, several-file requests with one bad file, bodies over the
size limit sent the way urllib sends them (everything before reading the answer), clients that
stall mid-upload, and clients that hang up mid-upload. Prints requests/s, p50/p95 latency and
outcomes per kind, and the server's RSS at start, after warm-up, at its peak and at the end.
Targets: peak RSS under 2.5 GB; end RSS within 15% of the post-warm-up value.

Then, when asked, two hostile phases (see `_soak_phases`), each printed as a table of targets:
--held-uploads N (connections holding a 10 MB upload unfinished while normal clients caption) and
--idle-connections N (connections that send nothing; the server then runs under ulimit -n 1024).
--requests 0 runs them alone.

Usage: python benchmarks/serve_soak.py [--requests 2000] [--clients 16] [--max-seconds 900]
       [--held-uploads 400] [--idle-connections 1100]
Only 127.0.0.1 is used. Exit code 1 when a target is missed or a request got an unexpected answer.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from _soak_phases import held_uploads, idle_connections, open_files_limit, raise_open_files

REPO = Path(__file__).resolve().parents[1]
PHOTOS = sorted((REPO / "examples").glob("*.jpg"))
HOST = "127.0.0.1"
MAX_BYTES = 10 * 2**20  # the server's default --max-bytes
# kind -> share of the requests
MIX = {
    "good": 0.62,
    "near_limit": 0.05,
    "junk": 0.10,
    "multi": 0.08,
    "oversize": 0.05,
    "stalled": 0.05,
    "hang_up": 0.05,
}
EXPECTED = {  # kind -> outcomes that count as correct
    "good": {"200"},
    "near_limit": {"200", "504"},  # 504 only when the decoding queue is long
    "junk": {"415"},
    "multi": {"200 per-file"},
    "oversize": {"413"},
    "stalled": {"408 closed"},
    "hang_up": {"hung up"},
}


def near_limit_png(side: int = 9400) -> bytes:
    """A grey PNG of side x side zero pixels: ~90 KB of file, side**2 pixels to decode."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    deflate = zlib.compressobj(9)
    row = bytes(1 + side)  # filter byte + pixels
    data = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
    return png + chunk(b"IEND", b"")


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    """The server's RSS every 0.1 s; `peak` is the largest seen."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.1)


def start_server(
    model: str, port: int, body_timeout: float, log: Path, open_files: int | None = None
) -> subprocess.Popen:
    command = [sys.executable, "-m", "rnncap.cli", "serve", "--model", model, "--host", HOST]
    command += ["--port", str(port), "--device", "cpu", "--body-timeout", str(body_timeout)]
    limit = open_files_limit(open_files) if open_files else None
    process = subprocess.Popen(
        command, stdout=log.open("wb"), stderr=subprocess.STDOUT, preexec_fn=limit
    )
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"server exited with code {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit("server did not start")


class Client:
    """One client thread's connection and the request kinds it can send."""

    def __init__(self, port: int, files: dict[str, bytes]):
        self.port, self.files = port, files
        self.url = f"http://{HOST}:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=120)

    def send(self, kind: str, i: int) -> str:
        return getattr(self, kind)(i)

    def _post(self, files: list[tuple[str, bytes, str]]) -> httpx.Response:
        return self.http.post("/caption", files=[("file", f) for f in files])

    def good(self, i: int) -> str:
        photo = PHOTOS[i % len(PHOTOS)]
        return str(self._post([(photo.name, self.files[photo.name], "image/jpeg")]).status_code)

    def near_limit(self, i: int) -> str:
        return str(self._post([("big.png", self.files["big.png"], "image/png")]).status_code)

    def junk(self, i: int) -> str:
        junk = random.Random(i).randbytes(2000)
        return str(self._post([("junk.jpg", junk, "image/jpeg")]).status_code)

    def multi(self, i: int) -> str:
        photos = [(p.name, self.files[p.name], "image/jpeg") for p in PHOTOS[:3]]
        response = self._post([*photos, ("notes.jpg", b"not an image", "image/jpeg")])
        results = response.json().get("results", []) if response.status_code == 200 else []
        ok = [r.get("caption") for r in results[:3]] and results[3].get("status") == 415
        return "200 per-file" if ok else f"{response.status_code} wrong shape"

    def oversize(self, i: int) -> str:
        request = urllib.request.Request(
            f"{self.url}/caption",
            data=bytes(MAX_BYTES + 4096),
            headers={"content-type": "image/jpeg"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return str(response.status)
        except urllib.error.HTTPError as error:
            return str(error.code)
        except OSError as error:
            return f"{type(error).__name__}"

    def _partial(self) -> socket.socket:
        s = socket.create_connection((HOST, self.port), timeout=60)
        s.sendall(
            b"POST /caption HTTP/1.1\r\nHost: soak\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 100000\r\n\r\n" + bytes(1000)
        )
        return s

    def stalled(self, i: int) -> str:
        with self._partial() as s:  # ... then sends nothing more
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
            status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "none"
            return f"{status} closed"

    def hang_up(self, i: int) -> str:
        self._partial().close()
        return "hung up"


def run(args: argparse.Namespace, port: int, files: dict[str, bytes], kinds: list[str]):
    """Send `kinds` from args.clients threads; -> [(kind, outcome, seconds)]."""
    deadline = time.monotonic() + args.max_seconds

    def worker(w: int) -> list[tuple[str, str, float]]:
        client, out = Client(port, files), []
        for i in range(w, len(kinds), args.clients):
            if time.monotonic() > deadline:
                break
            start = time.perf_counter()
            try:
                outcome = client.send(kinds[i], i)
            except (httpx.HTTPError, OSError) as error:
                outcome = type(error).__name__
            out.append((kinds[i], outcome, time.perf_counter() - start))
        client.http.close()
        return out

    with ThreadPoolExecutor(args.clients) as pool:
        return [r for part in pool.map(worker, range(args.clients)) for r in part]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def report_mix(args: argparse.Namespace, results: list, seconds: float) -> int:
    """Prints the mix's table; -> the number of unexpected outcomes."""
    by_kind: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for kind, outcome, latency in results:
        by_kind[kind].append((outcome, latency))
    unexpected = 0
    print(
        f"{len(results)} requests ({args.requests} planned) from {args.clients} clients in "
        f"{seconds:.1f} s: {len(results) / seconds:.1f} requests/s "
        f"(after {args.warm_up} warm-up requests; server --body-timeout {args.body_timeout:g})"
    )
    print(f"{'kind':<11}{'count':>6}{'p50 ms':>9}{'p95 ms':>9}  outcomes")
    for kind in MIX:
        rows = by_kind.get(kind, [])
        latencies = [t for _, t in rows]
        outcomes = Counter(o for o, _ in rows)
        unexpected += sum(n for o, n in outcomes.items() if o not in EXPECTED[kind])
        shown = ", ".join(f"{o}: {n}" for o, n in outcomes.most_common())
        print(
            f"{kind:<11}{len(rows):>6}{1000 * percentile(latencies, 0.5):>9.0f}"
            f"{1000 * percentile(latencies, 0.95):>9.0f}  {shown}"
        )
    everything = [t for _, _, t in results]
    print(
        f"{'all':<11}{len(results):>6}{1000 * percentile(everything, 0.5):>9.0f}"
        f"{1000 * percentile(everything, 0.95):>9.0f}  unexpected outcomes: {unexpected}"
    )
    return unexpected


def run_mix(args, port, files, kinds, server, rss_warm) -> bool:
    """The mix of good and hostile requests; prints its results, -> whether all went well."""
    sampler = Sampler(server.pid)
    sampler.start()
    started = time.perf_counter()
    results = run(args, port, files, kinds)
    seconds = time.perf_counter() - started
    time.sleep(2)  # let the last stalled connections time out
    rss_end = rss(server.pid)
    sampler.running = False
    sampler.join()
    health = httpx.get(f"http://{HOST}:{port}/healthz", timeout=10).json()
    unexpected = report_mix(args, results, seconds)
    mb = 2**20
    peak, growth = sampler.peak, rss_end / rss_warm - 1
    print(
        f"server RSS: after warm-up {rss_warm / mb:.0f} MB, "
        f"peak {peak / mb:.0f} MB, end {rss_end / mb:.0f} MB ({100 * growth:+.1f}% vs warm-up)"
    )
    decoding = health["decoding"]
    print(
        f"decoding: peak {decoding['peak_pixels_in_flight'] / 1e6:.0f} M pixels in flight; "
        f"batches {health['batches']['batches']}, largest {health['batches']['largest_batch']}"
    )
    targets = peak < 2.5 * 1000**3 and abs(growth) <= 0.15
    print(f"targets (peak < 2.5 GB, end within 15% of warm-up): {'met' if targets else 'MISSED'}")
    return targets and not unexpected


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model spec (default: default)")
    parser.add_argument("--requests", type=int, default=2000, help="requests after warm-up")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--warm-up", type=int, default=64, help="good requests first")
    parser.add_argument("--max-seconds", type=float, default=900, help="stop sending after this")
    parser.add_argument("--body-timeout", type=float, default=3.0, help="server's --body-timeout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--held-uploads", type=int, default=0, help="held 10 MB uploads phase")
    parser.add_argument("--idle-connections", type=int, default=0, help="idle connections phase")
    parser.add_argument(
        "--server-open-files",
        type=int,
        default=1024,
        help="the server's open-file limit when a hostile phase runs (default: 1024)",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    raise_open_files()  # the idle phase opens more sockets than the usual 1024
    files = {p.name: p.read_bytes() for p in PHOTOS}
    files["big.png"] = near_limit_png()
    photos = {p.name: files[p.name] for p in PHOTOS}
    rng = random.Random(args.seed)
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=args.requests)
    hostile = args.held_uploads > 0 or args.idle_connections > 0
    ok = True
    with tempfile.TemporaryDirectory() as scratch:
        sock = socket.socket()
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        sock.close()
        log = Path(scratch) / "server.log"
        limit = args.server_open_files if hostile else None
        server = start_server(args.model, port, args.body_timeout, log, limit)
        try:
            rss_start = rss(server.pid)
            run(args, port, files, ["good"] * args.warm_up)
            time.sleep(1)
            rss_warm = rss(server.pid)
            print(
                f"server RSS: start {rss_start / 2**20:.0f} MB, "
                f"after {args.warm_up} warm-up requests {rss_warm / 2**20:.0f} MB"
            )
            if args.requests > 0:
                ok &= run_mix(args, port, files, kinds, server, rss_warm)
            if args.held_uploads > 0:
                ok &= held_uploads(
                    port,
                    server.pid,
                    args.held_uploads,
                    photos,
                    rss,
                    Sampler,
                    rss_warm,
                    max_seconds=args.max_seconds,
                )
            if args.idle_connections > 0:
                ok &= idle_connections(
                    port,
                    args.idle_connections,
                    photos,
                    args.server_open_files,
                    max_seconds=args.max_seconds,
                )
        finally:
            server.terminate()
            server.wait()
        server_log = log.read_text(errors="replace").splitlines()
    tracebacks = sum("Traceback" in line for line in server_log)
    print(
        f"\nserver log: {len(server_log)} lines, {tracebacks} tracebacks; "
        f"{'all targets met' if ok and not tracebacks else 'a target was MISSED'}"
    )
    return 0 if ok and not tracebacks else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
