"""One aiohttp application serving the HTTP API and Socket.IO on the same port."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import socketio
from aiohttp import web

from .config import ServerConfig
from .http_api import SERVICE, SOCKETS, add_routes, json_errors
from .service import Service
from .sockets import SocketHandlers
from .store import Store

log = logging.getLogger(__name__)


def build_app(config: ServerConfig, store: Store) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=config.max_body_bytes)
    service = Service(config, store)
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins=[],
                               max_http_buffer_size=config.max_body_bytes,
                               logger=False, engineio_logger=False)
    sio.attach(app)
    app[SERVICE] = service
    app[SOCKETS] = SocketHandlers(sio, service)
    app.cleanup_ctx.append(app[SOCKETS].presence_checker)
    add_routes(app)
    return app


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)  # readers never see a half-written file


SHUTDOWN_SECONDS = 0.25


async def serve(config: ServerConfig, port_file: Path | None = None) -> None:
    store = Store(config.database)
    app = build_app(config, store)
    # Open Socket.IO connections would otherwise hold the shutdown for long: each waits for
    # its handler twice (aiohttp), 2 s a stop with 1 s; a request still running is cut after it
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    site: web.TCPSite | None = None
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        port = runner.addresses[0][1]
        log.info("dummy server listening on http://%s:%d (database %s)", config.host, port,
                 config.database)
        if port_file is not None:
            _write_port_file(port_file, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("dummy server stopping")
    finally:
        if site is not None:
            # no new connections first: a node hung up on below reconnects at once, and its
            # new session held the shutdown
            await site.stop()
        await app[SOCKETS].close()
        await runner.cleanup()
        store.close()
