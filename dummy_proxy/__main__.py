"""``python -m dummy_proxy --config proxy_config.yaml`` or ``--listen HOST:PORT --upstream URL``."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from .config import ProxyConfig, load_config
from .errors import ConfigError
from .guard import Guard
from .proxy import Proxy

log = logging.getLogger("dummy_proxy")


async def serve(config: ProxyConfig, port_file: Path | None) -> None:
    proxy = Proxy(config)
    await proxy.start()
    # lingering_time=0: close at once after refusing a request whose body we never read.
    # keepalive_timeout: the guard's idle timeout closes idle connections instead.
    server = web.Server(proxy.handle, access_log=None, lingering_time=0,
                        keepalive_timeout=config.idle_timeout_seconds + 5)
    guard = Guard(server, header_timeout=config.header_timeout_seconds,
                  idle_timeout=config.idle_timeout_seconds, max_connections=config.max_connections)
    proxy.guard = guard
    loop = asyncio.get_running_loop()
    # Our own listening socket: aiohttp's TCPSite would hand its server object to the loop, with
    # no place for the guard in between.
    listener = await loop.create_server(guard, config.listen_host, config.listen_port,
                                        reuse_address=True)
    try:
        port = listener.sockets[0].getsockname()[1]
        log.info("proxy listening on http://%s:%d, forwarding /api to %s", config.listen_host,
                 port, config.upstream)
        reason = await proxy.probe_upstream()
        # Operators look for this exact line.
        if reason is None:
            log.info("outbound access to server %s: OK", config.upstream)
        else:
            log.warning("outbound access to server %s: FAILED (%s)", config.upstream, reason)
        if port_file is not None:
            tmp = port_file.with_name(port_file.name + ".tmp")
            tmp.write_text(f"{port}\n")
            os.replace(tmp, port_file)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("proxy stopping")
    finally:
        listener.close()
        await server.shutdown(timeout=5)
        await listener.wait_closed()
        await proxy.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dummy_proxy", description=__doc__)
    parser.add_argument("--config", type=Path, help="proxy_config.yaml")
    parser.add_argument("--listen", help="HOST:PORT to listen on (port 0 = any free port)")
    parser.add_argument("--upstream", help="the server, e.g. http://127.0.0.1:5000")
    parser.add_argument("--max-body-bytes", type=int)
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, args.listen, args.upstream, args.max_body_bytes)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    asyncio.run(serve(config, args.port_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
