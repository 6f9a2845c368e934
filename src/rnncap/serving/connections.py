"""Open connections under limits: a connection that sends no request within a few seconds is
closed, and past a cap the oldest connection with no request in progress makes room.

Without these, clients that connect and send nothing keep their sockets forever, and a thousand
of them use up the process's file descriptors: every later client then waits in vain.
"""

from __future__ import annotations

import asyncio
import logging
import resource

log = logging.getLogger("rnncap.serve")

RESERVED_DESCRIPTORS = 128  # left to the model's files, threads' pipes, logs
_BUSY_BODY = b'{"error": "server busy: too many open connections; retry later"}'
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


def connection_limits() -> tuple[int, int]:
    """(open connections at most, listen backlog) that fit in this process's file descriptors.

    asyncio accepts up to a backlog's worth of connections at once before any is seen here, and
    a connection may hold a second descriptor (an upload spooled to a temporary file): so half
    the descriptors left after a reserve and one backlog, at most 1000.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    usable = 10_000 if soft == resource.RLIM_INFINITY else soft - RESERVED_DESCRIPTORS
    backlog = max(8, min(128, usable // 8))
    return max(8, min(1000, (usable - backlog) // 2)), backlog


class ConnectionGuard:
    """The open connections of one server, oldest first, and what it did to them."""

    def __init__(self, max_connections: int, header_timeout: float):
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.open: dict[asyncio.Protocol, None] = {}  # insertion order: oldest first
        self.closed_idle = 0  # closed for sending no request in time, or to make room
        self.refused = 0  # turned away: every connection had a request in progress

    def admit(self, connection) -> bool:
        """Register a new connection, closing the oldest idle one when the cap is reached;
        False when every open connection is busy (the new one is to be refused)."""
        if len(self.open) >= self.max_connections:
            oldest = next((c for c in self.open if _idle(c)), None)
            if oldest is None:
                self.refused += 1
                return False
            self.close(oldest)
        self.open[connection] = None
        return True

    def close(self, connection) -> None:
        self.open.pop(connection, None)
        self.closed_idle += 1
        connection.transport.close()


def _idle(connection) -> bool:
    """No request in progress: none received yet, or the last one answered."""
    cycle = connection.cycle
    return cycle is None or cycle.response_complete


def guarded_protocol(base: type, guard: ConnectionGuard) -> type:
    """A subclass of uvicorn's HTTP protocol `base` whose connections `guard` limits."""

    class GuardedProtocol(base):
        _header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if not guard.admit(self):
                transport.write(BUSY)
                transport.close()
                return
            self._arm_header_timer()

        def connection_lost(self, exc) -> None:
            guard.open.pop(self, None)
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_timer()  # the next request's headers are due in time too

        def _arm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            cycle = self.cycle
            self._header_timer = self.loop.call_later(
                guard.header_timeout, self._no_request_in_time, cycle
            )

        def _no_request_in_time(self, cycle) -> None:
            if self.cycle is cycle and not self.transport.is_closing() and _idle(self):
                guard.close(self)

    GuardedProtocol.__name__ = f"Guarded{base.__name__}"
    return GuardedProtocol


def run_server(app, host: str, port: int, max_connections: int | None, header_timeout: float):
    """uvicorn.run(app) with its connections limited by a ConnectionGuard (max_connections
    None: what fits in the open-file limit, `connection_limits()`)."""
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    fitting, backlog = connection_limits()
    guard = ConnectionGuard(max_connections or fitting, header_timeout)
    protocol = guarded_protocol(AutoHTTPProtocol, guard)
    uvicorn.run(app, host=host, port=port, log_level="warning", http=protocol, backlog=backlog)
