"""`python -m benchmarks.upstream --port-file F`: a stand-in server for the proxy benchmark.

GET /api/ping answers a small JSON body; GET /api/blob?bytes=N streams N bytes in 64 KiB chunks.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

from aiohttp import web

CHUNK = b"\0" * (64 * 1024)


async def ping(request: web.Request) -> web.Response:
    return web.json_response({"version": "bench"})


async def blob(request: web.Request) -> web.StreamResponse:
    size = int(request.query.get("bytes", "0"))
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream",
                                       "Content-Length": str(size)})
    await resp.prepare(request)
    left = size
    while left > 0:
        piece = CHUNK if left >= len(CHUNK) else CHUNK[:left]
        await resp.write(piece)
        left -= len(piece)
    await resp.write_eof()
    return resp


async def serve(port_file: Path) -> None:
    app = web.Application()
    app.router.add_get("/api/ping", ping)
    app.router.add_get("/api/health", ping)
    app.router.add_get("/api/blob", blob)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    tmp = port_file.with_name(port_file.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, port_file)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upstream")
    parser.add_argument("--port-file", type=Path, required=True)
    asyncio.run(serve(parser.parse_args().port_file))


if __name__ == "__main__":
    main()
