"""The proxy's HTTP handling: forward allowed requests to the upstream, streaming both ways."""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import aiohttp
from aiohttp import web

from .config import ProxyConfig
from .errors import BodyTooLarge
from .guard import Guard
from .target import check_target

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
# Only these request headers reach the server; cookies, proxy credentials and client-made
# forwarding headers stay behind.
FORWARDED_REQUEST_HEADERS = ("Authorization", "Content-Type", "Content-Length",
                             "Content-Encoding", "Accept", "Accept-Encoding", "Accept-Language",
                             "User-Agent", "If-None-Match", "If-Modified-Since")
# Our node's API key for the server (CONTRACTS §4); the same name as dummy_server.http_api's.
NODE_KEY_HEADER = "X-V6-Node-Key"
HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade"))


def _json_error(status: int, message: str) -> web.Response:
    response = web.json_response({"error": message}, status=status)
    # An unread request body would otherwise be drained before the connection is reused.
    response.force_close()
    return response


class BodyStalled(Exception):
    pass


class Proxy:
    def __init__(self, config: ProxyConfig, guard: Guard | None = None):
        self.config = config
        self.guard = guard
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100),
            auto_decompress=False,
            trust_env=False,                       # never go through an environment proxy
            cookie_jar=aiohttp.DummyCookieJar(),   # never share cookies between clients
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def probe_upstream(self) -> str | None:
        """None when the upstream answers HTTP, otherwise the reason it does not."""
        try:
            async with self._session.get(self.config.upstream + "/api/health",
                                         timeout=aiohttp.ClientTimeout(total=3),
                                         allow_redirects=False) as resp:
                if resp.status >= 500:
                    return f"HTTP {resp.status}"
                return None
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if self.guard is None:
            return await self._handle(request)
        self.guard.request_started(request.transport)
        try:
            return await self._handle(request)
        finally:
            self.guard.request_done(request.transport)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        target = request.message.path
        if request.method == "GET" and target == "/health":
            reason = await self.probe_upstream()
            if reason is None:
                return web.json_response({"upstream": "ok"})
            return web.json_response({"upstream": "unreachable", "reason": reason}, status=503)
        verdict = check_target(request.method, target)
        if verdict.status:
            log.warning("refused %s request: %s", request.method, verdict.reason)
            return _json_error(verdict.status, verdict.reason)
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _json_error(413, f"request body larger than {limit} bytes")
        return await self._forward(request, target)

    def _request_headers(self, request: web.BaseRequest) -> dict[str, str]:
        headers = {name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS
                   if name in request.headers}
        if request.remote:
            headers["X-Forwarded-For"] = request.remote
        headers["X-Forwarded-Proto"] = request.scheme
        # The node's identity comes from our config only: a client's X-V6-Node-Key is not in
        # FORWARDED_REQUEST_HEADERS, so it never passes (the server binds tokens to it).
        if self.config.node_api_key:
            headers[NODE_KEY_HEADER] = self.config.node_api_key
        return headers

    async def _body(self, request: web.BaseRequest, state: dict) -> AsyncIterator[bytes]:
        seen = 0
        while True:
            try:
                chunk = await asyncio.wait_for(request.content.readany(),
                                               self.config.body_timeout_seconds)
            except asyncio.TimeoutError as e:
                state["stalled"] = True
                raise BodyStalled("request body stalled") from e
            if not chunk:
                return
            seen += len(chunk)
            if seen > self.config.max_body_bytes:
                state["too_large"] = True
                raise BodyTooLarge(f"request body larger than {self.config.max_body_bytes} bytes")
            yield chunk

    async def _forward(self, request: web.BaseRequest, target: str) -> web.StreamResponse:
        cfg = self.config
        timeout = aiohttp.ClientTimeout(total=cfg.max_request_seconds,
                                        connect=cfg.connect_timeout_seconds,
                                        sock_read=cfg.upstream_timeout_seconds)
        has_body = request.body_exists
        state: dict = {}
        try:
            upstream = await self._session.request(
                request.method, cfg.upstream + target,
                headers=self._request_headers(request),
                data=self._body(request, state) if has_body else None,
                allow_redirects=False, timeout=timeout, skip_auto_headers=("User-Agent",))
        except BodyTooLarge:
            return _json_error(413, f"request body larger than {cfg.max_body_bytes} bytes")
        except BodyStalled:
            return _json_error(408, f"request body not received within {cfg.body_timeout_seconds:g} s")
        except (aiohttp.ServerTimeoutError, asyncio.TimeoutError):
            return _json_error(504, "the server did not answer in time")
        except aiohttp.ClientError as e:
            if state.get("too_large"):
                return _json_error(413, f"request body larger than {cfg.max_body_bytes} bytes")
            if state.get("stalled"):
                return _json_error(408, f"request body not received within {cfg.body_timeout_seconds:g} s")
            log.warning("upstream request failed: %s", type(e).__name__)
            return _json_error(502, "the server cannot be reached")
        try:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            connection_named = {h.strip().lower()
                                for h in upstream.headers.get("Connection", "").split(",")}
            for name, value in upstream.headers.items():
                lname = name.lower()
                if lname not in HOP_BY_HOP and lname not in connection_named:
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            # Headers are out already: all we can do is cut the connection.
            log.warning("upstream response broke off: %s", type(e).__name__)
            request.transport and request.transport.close()
            return response
        finally:
            upstream.release()
