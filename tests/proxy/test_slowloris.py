"""Half-sent requests (slowloris) and connection floods against the real proxy process: normal
requests keep being served, half-sent ones are closed by the header timeout, idle ones by the idle
timeout, a slow body by the body timeout, and connections over the cap get 503. Loopback only,
bounded in count and time."""
from __future__ import annotations

import socket
import time

import pytest
import requests

from dummy_proxy.testing import ProxyProcess
from dummy_server.testing import NODE_KEYS
from localcluster.testing import wait_until

HALF_SENT = 30
HEADER_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def guarded_proxy(sink, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("guarded_proxy")
    config = workdir / "proxy_config.yaml"
    config.write_text(f"header_timeout_seconds: {HEADER_TIMEOUT}\nidle_timeout_seconds: 2\n"
                      "body_timeout_seconds: 1\nmax_connections: 40\n")
    proc = ProxyProcess(workdir, f"http://127.0.0.1:{sink.port}", "--config", str(config),
                        node_key=NODE_KEYS["node-a"]).start()
    yield proc
    proc.stop()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    return sock


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the proxy closed the connection (EOF or reset); False while it is still open."""
    try:
        data = sock.recv(4096)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 ")  # an answer ends the half-sent request too


def _get(proxy, path="/api/headers"):
    return requests.get(proxy.url + path, timeout=5)


def test_half_sent_requests_are_closed_while_normal_ones_are_served(guarded_proxy):
    socks = [_connect(guarded_proxy.port) for _ in range(HALF_SENT)]
    try:
        started = time.monotonic()
        for sock in socks:
            sock.send(b"GET /api/headers HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
        # While they hang, a normal request is served at once.
        assert _get(guarded_proxy).status_code == 200
        # Trickling one more byte does not extend the deadline.
        for sock in socks[:5]:
            sock.send(b"a")
        open_socks = set(range(HALF_SENT))

        def all_closed():
            for i in list(open_socks):
                if _closed_by_peer(socks[i]):
                    open_socks.discard(i)
            return not open_socks
        wait_until(all_closed, timeout=HEADER_TIMEOUT + 5, what="half-sent requests closed")
        elapsed = time.monotonic() - started
        assert elapsed >= HEADER_TIMEOUT * 0.9, f"closed after {elapsed:.2f}s, before the timeout"
        assert _get(guarded_proxy).status_code == 200
    finally:
        for sock in socks:
            sock.close()


def test_idle_connections_are_closed(guarded_proxy):
    sock = _connect(guarded_proxy.port)
    try:
        assert not _closed_by_peer(sock)
        wait_until(lambda: _closed_by_peer(sock), timeout=2 + 5, what="idle connection closed")
    finally:
        sock.close()


def test_a_stalled_body_is_answered_408(guarded_proxy):
    sock = socket.create_connection(("127.0.0.1", guarded_proxy.port), timeout=10)
    try:
        sock.sendall(b"POST /api/sink HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"a\":")
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"request body not received within 1 s" in answer
    finally:
        sock.close()


def test_connections_over_the_cap_get_503_and_are_served_once_slots_free(guarded_proxy):
    socks = [_connect(guarded_proxy.port) for _ in range(40)]
    try:
        # every slot is taken once the proxy has accepted them: the next connection is refused
        def refused():
            r = _get(guarded_proxy)
            return [r] if r.status_code == 503 else None  # a 503 Response is falsy
        [answer] = wait_until(refused, timeout=5, what="a 503 over the cap")
        assert "too many connections" in answer.json()["error"]
        assert answer.headers["Retry-After"] == "1"
    finally:
        for sock in socks:
            sock.close()
    wait_until(lambda: _get(guarded_proxy).status_code == 200, timeout=5,
               what="served again once slots are free")
