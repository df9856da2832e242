"""A stand-in upstream for the proxy tests: counts streamed bodies, echoes headers, misbehaves.

Run as ``python sink_server.py --port-file FILE``; listens on 127.0.0.1, any free port.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
from pathlib import Path

from aiohttp import web

seen = {"requests": 0}


async def sink(request: web.Request) -> web.Response:
    digest, total = hashlib.sha256(), 0
    async for chunk in request.content.iter_chunked(65536):
        digest.update(chunk)
        total += len(chunk)
    return web.json_response({"bytes": total, "sha256": digest.hexdigest()})


async def headers(request: web.Request) -> web.Response:
    return web.json_response({k: v for k, v in request.headers.items()})


async def big(request: web.Request) -> web.StreamResponse:
    n = int(request.query["n"])
    resp = web.StreamResponse()
    resp.content_length = n
    await resp.prepare(request)
    block = b"x" * 65536
    while n > 0:
        await resp.write(block[:n])
        n -= min(n, len(block))
    await resp.write_eof()
    return resp


async def slow(request: web.Request) -> web.Response:
    await asyncio.Event().wait()  # never answers: the proxy must time out (and hang up)
    raise AssertionError("unreachable")


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("http://example.invalid/api/elsewhere")


@web.middleware
async def count(request, handler):
    seen["requests"] += 1
    return await handler(request)


async def requests_seen(request: web.Request) -> web.Response:
    return web.json_response(seen)


async def main(port_file: Path) -> None:
    app = web.Application(middlewares=[count], client_max_size=1 << 30)
    app.router.add_post("/api/sink", sink)
    app.router.add_get("/api/headers", headers)
    app.router.add_get("/api/big", big)
    app.router.add_get("/api/slow", slow)
    app.router.add_get("/api/redirect", redirect)
    app.router.add_get("/api/health", lambda r: web.json_response({"status": "ok"}))
    app.router.add_get("/sink-stats", requests_seen)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    tmp = port_file.with_name(port_file.name + ".tmp")
    tmp.write_text(str(runner.addresses[0][1]))
    os.replace(tmp, port_file)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", type=Path, required=True)
    asyncio.run(main(parser.parse_args().port_file))
