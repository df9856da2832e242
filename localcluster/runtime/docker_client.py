"""A small client of the Docker Engine HTTP API over its unix socket (API v1.41, Docker 20.10+).

Async calls (the kubelet's containers and networks) go through aiohttp's unix connector; the few
calls made outside the event loop or from synchronous code (image inspection when the kubelet
resolves an image, cleanup at start and exit) use `http.client` on the same socket. Both raise
`DockerError` (with the HTTP status) for engine errors and `DockerUnavailable` when the engine
cannot be reached.

Also here: the decoder of the engine's multiplexed stdout/stderr stream (pure) and
`docker_unavailable`, which says why Docker cannot be used (for ``--runtime docker`` and tests).
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import struct
from typing import Any, AsyncIterator
from urllib.parse import quote, urlencode

DEFAULT_SOCKET = "/var/run/docker.sock"
API_VERSION = "v1.41"
LABEL = "localcluster.cluster"  # every container and network made carries this label


class DockerError(Exception):
    """The engine answered with an error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"docker engine: {message} (HTTP {status})")
        self.status = status
        self.message = message


class DockerUnavailable(DockerError):
    """The engine cannot be reached."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


def socket_path() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host.removeprefix("unix://")
    return DEFAULT_SOCKET


def docker_unavailable(path: str | None = None) -> str | None:
    """Why the Docker engine cannot be used here, or None when it can."""
    path = path or socket_path()
    if not os.path.exists(path):
        return f"no Docker engine socket at {path} (install docker.io and start dockerd)"
    try:
        SyncDocker(path).request("GET", "/_ping", timeout=5)
    except DockerError as e:
        return f"the Docker engine at {path} does not answer: {e.message}"
    return None


def _path(path: str, query: dict[str, Any] | None) -> str:
    full = f"/{API_VERSION}{path}"
    if query:
        # dicts (filters) go as JSON, lists as repeated parameters (import's "changes")
        full += "?" + urlencode({k: (json.dumps(v) if isinstance(v, dict) else
                                     str(v).lower() if isinstance(v, bool) else v)
                                 for k, v in query.items()}, doseq=True)
    return full


def q(name: str) -> str:
    """A name or id as one path segment (image names have slashes and colons)."""
    return quote(name, safe="")


def _message(status: int, body: bytes) -> str:
    try:
        return str(json.loads(body).get("message") or body.decode(errors="replace")).strip()
    except (ValueError, AttributeError):
        return body.decode(errors="replace").strip() or f"HTTP {status}"


def _answer(status: int, raw: bytes) -> Any:
    """The engine's answer: DockerError for an error status, else the JSON body (raw bytes
    when it is not JSON, None when empty)."""
    if status >= 400:
        raise DockerError(status, _message(status, raw))
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._socket_path)
        self.sock = sock


class SyncDocker:
    """Blocking calls, one connection each (used rarely: image inspection, cleanup)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or socket_path()

    def request(self, method: str, path: str, query: dict[str, Any] | None = None,
                body: Any = None, data: bytes | None = None, timeout: float = 30,
                content_type: str = "application/json") -> Any:
        conn = _UnixConnection(self.path, timeout)
        try:
            payload = data if data is not None else (
                json.dumps(body).encode() if body is not None else None)
            headers = {"Content-Type": content_type} if payload is not None else {}
            conn.request(method, _path(path, query), body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as e:
            raise DockerUnavailable(f"{self.path}: {e}") from e
        finally:
            conn.close()
        return _answer(resp.status, raw)


class AsyncDocker:
    """Calls from the event loop (aiohttp over the unix socket; no threads)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or socket_path()
        self._session = None

    def _sess(self):
        import aiohttp
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.path),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        return self._session

    async def request(self, method: str, path: str, query: dict[str, Any] | None = None,
                      body: Any = None, timeout: float | None = 60) -> Any:
        import aiohttp
        try:
            async with self._sess().request(
                    method, "http://docker" + _path(path, query),
                    json=body, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, OSError) as e:
            raise DockerUnavailable(f"{self.path}: {e}") from e
        return _answer(status, raw)

    async def stream(self, path: str, query: dict[str, Any] | None = None
                     ) -> AsyncIterator[bytes]:
        """The raw body of a long request (e.g. followed logs), chunk by chunk."""
        import aiohttp
        try:
            async with self._sess().get(
                    "http://docker" + _path(path, query),
                    timeout=aiohttp.ClientTimeout(total=None)) as resp:
                if resp.status >= 400:
                    raw = await resp.read()
                    raise DockerError(resp.status, _message(resp.status, raw))
                async for chunk in resp.content.iter_any():
                    yield chunk
        except (aiohttp.ClientError, OSError) as e:
            raise DockerUnavailable(f"{self.path}: {e}") from e

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class FrameDecoder:
    """Splits the engine's multiplexed stream (8-byte header: stream, 0, 0, 0, size) into
    (stream name, payload) frames; feed it chunks as they come."""

    NAMES = {0: "stdin", 1: "stdout", 2: "stderr", 3: "system"}

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        self._buf += chunk
        out = []
        while len(self._buf) >= 8:
            kind, size = struct.unpack(">BxxxL", self._buf[:8])
            if len(self._buf) < 8 + size:
                break
            out.append((self.NAMES.get(kind, "stdout"), self._buf[8:8 + size]))
            self._buf = self._buf[8 + size:]
        return out
