"""The hostile phases of `serve_soak.py`: clients that hold the server's resources while normal
clients keep captioning photos (each normal request on a new connection).

- held uploads: N connections each send the headers of a 10 MB multipart POST and its body but
  for the last byte, then wait. Targets: server peak RSS <= 2.5 GB, every normal client answered,
  RSS after closing them within 20% of the post-warm-up value.
- idle connections: N connections that send nothing (the server runs under `ulimit -n 1024`).
  Target: every normal client answered (200) within 2 s.

Only 127.0.0.1 is used; every loop is bounded in count and time.
"""

from __future__ import annotations

import resource
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

HOST = "127.0.0.1"
MB = 2**20
HELD_BYTES = 10 * MB
PEAK_TARGET = 2.5 * 1000**3
AFTER_TARGET = 0.20  # RSS after the held uploads: within this share of the warm-up value
ANSWER_TARGET = 2.0  # seconds: normal clients answered within this beside idle connections


def raise_open_files() -> int:
    """This process's soft open-file limit raised to its hard limit; -> the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        soft = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def open_files_limit(n: int):
    """A preexec_fn for the server subprocess: `ulimit -n n`."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return limit


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


class NormalClients(threading.Thread):
    """`clients` threads captioning photos, each request on a new connection, until `stop()`,
    `max_requests` in all or `max_seconds`; `results` holds (status or error, seconds)."""

    def __init__(
        self,
        port: int,
        photos: dict[str, bytes],
        clients: int = 4,
        max_requests: int = 5000,
        max_seconds: float = 600,
        timeout: float = 30,
    ):
        super().__init__(daemon=True)
        self.url, self.photos, self.clients = f"http://{HOST}:{port}/caption", photos, clients
        self.max_requests, self.deadline = max_requests, time.monotonic() + max_seconds
        self.timeout, self.results, self._halt = timeout, [], threading.Event()

    def _worker(self, w: int) -> None:
        names = sorted(self.photos)
        for i in range(w, self.max_requests, self.clients):
            if self._halt.is_set() or time.monotonic() > self.deadline:
                return
            name = names[i % len(names)]
            start = time.perf_counter()
            try:
                files = [("file", (name, self.photos[name], "image/jpeg"))]
                outcome = str(httpx.post(self.url, files=files, timeout=self.timeout).status_code)
            except (httpx.HTTPError, OSError) as error:
                outcome = type(error).__name__
            self.results.append((outcome, time.perf_counter() - start))

    def run(self) -> None:
        with ThreadPoolExecutor(self.clients) as pool:
            list(pool.map(self._worker, range(self.clients)))

    def stop(self) -> list[tuple[str, float]]:
        self._halt.set()
        self.join(self.timeout + 5)
        return list(self.results)


def _held_request(size: int) -> bytes:
    boundary = b"soakheld"
    head = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
        b'filename="held.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    )
    tail = b"\r\n--" + boundary + b"--\r\n"
    body_length = size - len(head) - len(tail)
    body = head + bytes(body_length) + tail
    headers = (
        b"POST /caption HTTP/1.1\r\nHost: soak\r\nContent-Type: multipart/form-data; "
        b"boundary=" + boundary + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    return headers + body[:-1]  # all but the last byte


def _open_held(port: int, request: bytes, deadline: float) -> socket.socket | str:
    if time.monotonic() > deadline:
        return "not sent (time)"
    s = socket.socket()
    try:
        s.settimeout(30)
        s.connect((HOST, port))
        s.sendall(request)
        return s
    except OSError as error:
        s.close()
        return f"send failed ({type(error).__name__})"


def _state(s: socket.socket) -> str:
    """'open' while the server waits; else its answer's status, or 'closed'."""
    s.setblocking(False)
    try:
        answer = s.recv(64)
    except BlockingIOError:
        return "open"
    except OSError as error:
        return type(error).__name__
    return f"answered {answer.split(b' ', 2)[1].decode()}" if answer[:5] == b"HTTP/" else "closed"


def _tally(outcomes: list[str]) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return ", ".join(f"{o}: {n}" for o, n in sorted(counts.items(), key=lambda x: -x[1]))


def _row(measure: str, value: str, target: str, ok: bool | None) -> str:
    result = "-" if ok is None else ("PASS" if ok else "FAIL")
    return f"| {measure} | {value} | {target} | {result} |"


def _client_rows(results: list[tuple[str, float]], limit: float | None) -> tuple[list[str], bool]:
    latencies = [t for _, t in results]
    good = sum(o == "200" and (limit is None or t <= limit) for o, t in results)
    ok = bool(results) and good == len(results)
    within = "" if limit is None else f" within {limit:g} s"
    rows = [_row("normal clients answered" + within, f"{good} / {len(results)}", "all", ok)]
    p50, p95, top = (1000 * percentile(latencies, q) for q in (0.5, 0.95, 1.0))
    rows.append(
        _row(
            "normal clients p50 / p95 / max",
            f"{p50:.0f} / {p95:.0f} / {top:.0f} ms",
            "-" if limit is None else f"max <= {1000 * limit:.0f} ms",
            None,
        )
    )
    failures = _tally([o for o, t in results if o != "200" or (limit is not None and t > limit)])
    if failures:
        rows.append(_row("normal client failures", failures, "none", False))
    return rows, ok


def held_uploads(
    port: int,
    pid: int,
    n: int,
    photos: dict[str, bytes],
    rss,
    sampler_cls,
    rss_warm: int,
    hold: float = 3.0,
    max_seconds: float = 300,
) -> bool:
    """The held-uploads phase; prints its table, -> whether its targets were met."""
    deadline = time.monotonic() + max_seconds
    sampler = sampler_cls(pid)
    sampler.start()
    clients = NormalClients(port, photos, max_seconds=max_seconds)
    clients.start()
    request = _held_request(HELD_BYTES)
    started = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        opened = list(pool.map(lambda _: _open_held(port, request, deadline), range(n)))
    setup = time.perf_counter() - started
    time.sleep(hold)  # the normal clients keep captioning meanwhile
    held = [s for s in opened if isinstance(s, socket.socket)]
    states = [_state(s) for s in held] + [s for s in opened if isinstance(s, str)]
    results = clients.stop()
    for s in held:
        s.close()
    time.sleep(3.0)  # the server notices the closed connections and frees their bodies
    sampler.running = False
    sampler.join()
    after = rss(pid)
    growth = after / rss_warm - 1
    print(
        f"\nheld uploads: {n} x {HELD_BYTES // MB} MB multipart POSTs sent but for their last "
        f"byte in {setup:.1f} s, held {hold:g} s more, then closed"
    )
    print(f"held connections when closed: {_tally(states)}\n")
    peak_ok, after_ok = sampler.peak <= PEAK_TARGET, abs(growth) <= AFTER_TARGET
    rows, clients_ok = _client_rows(results, None)
    table = [
        "| measure | value | target | result |",
        "|---|---|---|---|",
        _row("server peak RSS", f"{sampler.peak / MB:.0f} MB", "<= 2.5 GB", peak_ok),
        *rows,
        _row(
            "server RSS after closing (vs warm-up)",
            f"{after / MB:.0f} MB ({100 * growth:+.1f}% vs {rss_warm / MB:.0f} MB)",
            f"within {100 * AFTER_TARGET:.0f}%",
            after_ok,
        ),
    ]
    print("\n".join(table))
    return peak_ok and clients_ok and after_ok


def idle_connections(
    port: int, n: int, photos: dict[str, bytes], open_files: int, max_seconds: float = 120
) -> bool:
    """The idle-connections phase; prints its table, -> whether its target was met."""
    deadline = time.monotonic() + max_seconds
    clients = NormalClients(port, photos, clients=2, max_seconds=max_seconds, timeout=10)
    clients.start()
    idle, failed = [], []
    started = time.perf_counter()
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        try:
            idle.append(socket.create_connection((HOST, port), timeout=5))
        except OSError as error:
            failed.append(type(error).__name__)
    setup = time.perf_counter() - started
    time.sleep(4.0)  # within the server's --header-timeout (5 s): the connections stay idle
    results = clients.stop()
    states = [_state(s) for s in idle]
    for s in idle:
        s.close()
    print(
        f"\nidle connections: {n} opened in {setup:.1f} s and left silent (server under "
        f"ulimit -n {open_files}); when closed: {_tally(states + failed)}\n"
    )
    rows, ok = _client_rows(results, ANSWER_TARGET)
    print("\n".join(["| measure | value | target | result |", "|---|---|---|---|", *rows]))
    return ok
