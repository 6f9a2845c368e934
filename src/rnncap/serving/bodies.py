"""Reading request bodies under limits: size, idle and total time per request, and the bytes that
all requests being read hold together (memory first, then temporary files, then 503).

A client that sends a large body and never finishes holds what it sent until the body timeout;
without a shared budget a few hundred of them hold gigabytes of the server's memory.
"""

from __future__ import annotations

import asyncio
import tempfile

from starlette.requests import ClientDisconnect, Request

from rnncap.serving.api_error import ApiError

DRAIN_FACTOR = 4  # an oversized body up to this many times the limit is read (and discarded)
FREE_BYTES = 64 * 1024  # the first bytes of every body are held in memory outside the budget


class ClientGone(Exception):
    """The client closed its connection before the request was read; logged as one line."""


class BodyBudget:
    """Bytes of request bodies held by all requests together: past FREE_BYTES per request they
    take `memory` bytes, then `disk` bytes of temporary files; a request that finds both spent
    is refused with 503. (A connection cap bounds the free part: see `rnncap.serving.connections`.)
    """

    def __init__(self, memory: int, disk: int):
        self.memory, self.disk = memory, disk
        self.in_memory = self.on_disk = 0
        self.peak_in_memory = self.peak_on_disk = 0

    def take(self, size: int, where: str) -> bool:
        """Count `size` more bytes held in "memory" or on "disk"; False when they do not fit."""
        if where == "memory":
            if self.in_memory + size > self.memory:
                return False
            self.in_memory += size
            self.peak_in_memory = max(self.peak_in_memory, self.in_memory)
        else:
            if self.on_disk + size > self.disk:
                return False
            self.on_disk += size
            self.peak_on_disk = max(self.peak_on_disk, self.on_disk)
        return True

    def give_back(self, memory: int, disk: int) -> None:
        self.in_memory -= memory
        self.on_disk -= disk


class Body:
    """One request's body as it arrives: in memory while the budget allows, then in an unnamed
    temporary file (nothing is left on disk). `release()` hands its bytes back to the budget."""

    def __init__(self, budget: BodyBudget):
        self.budget = budget
        self.size = 0
        self.chunks: list[bytes] = []
        self.file = None
        self.held_memory = self.held_disk = 0

    def add(self, chunk: bytes) -> None:
        size = len(chunk)
        if self.file is None and (
            self.size + size <= FREE_BYTES or self.budget.take(size, "memory")
        ):
            self.held_memory += size if self.size + size > FREE_BYTES else 0
            self.chunks.append(chunk)
        else:
            if not self.budget.take(size, "disk"):
                raise _busy("the uploads being received fill the server's upload budget")
            self.held_disk += size
            try:
                if self.file is None:
                    self.file = tempfile.TemporaryFile(prefix="rnncap-upload-")
                self.file.write(chunk)
            except OSError as error:  # no space, no file descriptor left
                raise _busy(f"cannot store the upload ({error.strerror or error})") from None
        self.size += size

    def read(self) -> bytes:
        """The whole body (the temporary file, if any, is read back and closed)."""
        data, self.chunks = b"".join(self.chunks), []
        if self.file is not None:
            self.file.seek(0)
            data += self.file.read()
            self.file.close()
            self.file = None
        return data

    def release(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.chunks = []
        self.budget.give_back(self.held_memory, self.held_disk)
        self.held_memory = self.held_disk = 0


def _busy(reason: str) -> ApiError:
    return ApiError(503, f"server busy: {reason}; retry later", close=True)


async def read_body(
    request: Request, max_bytes: int, idle: float, deadline: float, body: Body
) -> bytes:
    """The request body, gathered in `body`, or ApiError: 413 beyond `max_bytes`, 408 when the
    client sends nothing for `idle` seconds or has not finished by `deadline` (event-loop time),
    503 when the upload budget is spent. The caller releases `body` when the request ends.

    An oversized body is still read and thrown away up to DRAIN_FACTOR x `max_bytes`, so that a
    client which sends everything before reading the answer (Python's urllib) gets the 413
    instead of a reset connection; the connection is closed after any of these errors.
    """
    loop = asyncio.get_running_loop()
    declared = request.headers.get("content-length")
    drain_limit = DRAIN_FACTOR * max_bytes
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "invalid Content-Length header", close=True)
        if int(declared) > drain_limit:  # not worth reading: answer now
            raise _too_large(int(declared), max_bytes)
    received = 0
    chunks = request.stream().__aiter__()
    while True:
        wait = min(idle, deadline - loop.time())
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), max(wait, 0.0))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            waited = "in time" if wait < idle else f"for {idle:g} s"
            raise ApiError(
                408, f"request body not received {waited} ({received} bytes arrived)", close=True
            ) from None
        except ClientDisconnect:
            raise ClientGone(f"client disconnected after sending {received} bytes") from None
        received += len(chunk)
        if received <= max_bytes:
            body.add(chunk)
        elif received > drain_limit:
            break
    if received > max_bytes:
        raise _too_large(received, max_bytes, exact=declared is not None)
    return body.read()


def _too_large(size: int, max_bytes: int, exact: bool = True) -> ApiError:
    what = f"request of {size} bytes" if exact else "request"
    return ApiError(413, f"{what} exceeds the {max_bytes} byte limit", close=True)
