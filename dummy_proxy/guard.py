"""Connection limits the HTTP server lacks: a header-read timeout, an idle timeout and a cap on
concurrent connections.

aiohttp's server has a keep-alive timeout but nothing that bounds how long a client may take to
send a request head, so a client with code in an algorithm pod could hold connections open with
half-sent requests (slowloris) until the proxy runs out of file descriptors. ``Guard`` wraps the
server's protocol factory: each connection gets a timer that closes it when it is idle (no
request in progress) for ``idle_timeout`` or has sent part of a request head for longer than
``header_timeout``; the handler tells the guard when a request's head has been read and when the
exchange is over. Connections beyond ``max_connections`` are answered 503 and closed at once.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable

log = logging.getLogger(__name__)


def _busy_response() -> bytes:
    body = json.dumps({"error": "too many connections to the proxy; try again later"}).encode()
    head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body


class _Conn:
    """Per-connection state; ``timer`` is the one pending close, if any."""
    __slots__ = ("transport", "in_request", "in_head", "timer")

    def __init__(self, transport: asyncio.BaseTransport):
        self.transport = transport
        self.in_request = False
        self.in_head = False   # part of a request head has arrived, the handler has not started
        self.timer: asyncio.TimerHandle | None = None


class _GuardedProtocol(asyncio.Protocol):
    """Forwards every protocol call to the server's own handler, watching the connection."""

    def __init__(self, guard: "Guard", inner: Any):
        self._guard = guard
        self._inner = inner
        self._conn: _Conn | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._conn = self._guard._opened(transport)
        if self._conn is None:  # over the cap: already answered and closing
            return
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._conn is None:
            return
        if not self._conn.in_request and not self._conn.in_head:
            # The first bytes of a request head: from now on it must be complete in time; later
            # bytes do not extend the deadline (a byte a second must not keep it open).
            self._conn.in_head = True
            self._guard._arm(self._conn, self._guard.header_timeout, "request head not complete")
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._conn is None else self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is None:
            return
        self._guard._closed(self._conn)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._conn is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._conn is not None:
            self._inner.resume_writing()


class Guard:
    def __init__(self, factory: Callable[[], Any], header_timeout: float, idle_timeout: float,
                 max_connections: int):
        self._factory = factory
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._conns: dict[asyncio.BaseTransport, _Conn] = {}
        self.refused = 0
        self.timed_out = 0

    def __call__(self) -> asyncio.Protocol:
        """The protocol factory to hand to ``loop.create_server``."""
        return _GuardedProtocol(self, self._factory())

    @property
    def active(self) -> int:
        return len(self._conns)

    # The handler's two calls ------------------------------------------------------------------

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        """The request's head has been read: the head timer stops; the exchange itself is bounded
        by the proxy's request and body timeouts."""
        conn = self._conns.get(transport) if transport is not None else None
        if conn is not None:
            conn.in_request, conn.in_head = True, False
            self._cancel(conn)

    def request_done(self, transport: asyncio.BaseTransport | None) -> None:
        conn = self._conns.get(transport) if transport is not None else None
        if conn is not None:
            conn.in_request = False
            self._arm(conn, self.idle_timeout, "idle")

    # Bookkeeping -------------------------------------------------------------------------------

    def _opened(self, transport: asyncio.BaseTransport) -> _Conn | None:
        if len(self._conns) >= self.max_connections:
            self.refused += 1
            log.warning("refused a connection: %d connections open (max_connections)",
                        len(self._conns))
            try:
                transport.write(_busy_response())  # type: ignore[attr-defined]
            finally:
                transport.close()
            return None
        conn = _Conn(transport)
        self._conns[transport] = conn
        self._arm(conn, self.idle_timeout, "idle")
        return conn

    def _closed(self, conn: _Conn) -> None:
        self._cancel(conn)
        self._conns.pop(conn.transport, None)

    def _arm(self, conn: _Conn, seconds: float, why: str) -> None:
        self._cancel(conn)
        loop = asyncio.get_running_loop()
        conn.timer = loop.call_later(seconds, self._expire, conn, why)

    @staticmethod
    def _cancel(conn: _Conn) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    def _expire(self, conn: _Conn, why: str) -> None:
        conn.timer = None
        if conn.in_request or conn.transport.is_closing():
            return
        self.timed_out += 1
        log.info("closed a connection: %s", why)
        conn.transport.close()
