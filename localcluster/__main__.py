"""Command line: ``python -m localcluster serve --state-dir DIR [--port 0] [--images FILE ...]
[--history N]`` and ``python -m localcluster demo ...`` (see localcluster.stack)."""
from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import secrets
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("localcluster")


@dataclass(frozen=True)
class ServeSettings:
    state_dir: Path
    port: int = 0
    images: list[Path] = field(default_factory=list)
    history: int = 5000
    host: str = "127.0.0.1"
    bookmark_interval: float = 60.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m localcluster",
                                description="A local Kubernetes API stand-in.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the Kubernetes API and run the controllers")
    s.add_argument("--state-dir", type=Path, required=True)
    s.add_argument("--port", type=int, default=0, help="0 picks a free port")
    s.add_argument("--images", type=Path, action="append", default=[],
                   help="extra image registry YAML (repeatable)")
    s.add_argument("--history", type=int, default=5000,
                   help="watch events kept for resuming (older resourceVersions get 410)")
    s.add_argument("--bookmark-interval", type=float, default=60.0,
                   help="seconds between BOOKMARK events on watches that allow them")
    s.add_argument("--log-level", default="INFO")
    sub.add_parser("demo", help="run the whole demo stack", add_help=False)
    return p


async def _serve(settings: ServeSettings) -> int:
    from aiohttp import web

    from localcluster import kubeconfig
    from localcluster.api import ApiSettings, make_app
    from localcluster.store import Store

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    kc_path = settings.state_dir / "kubeconfig"
    kc_path.unlink(missing_ok=True)  # a stale file would look like a ready cluster
    store = Store(history=settings.history)
    api = ApiSettings(token=secrets.token_urlsafe(32), state_dir=settings.state_dir,
                      bookmark_interval=settings.bookmark_interval)
    runner = web.AppRunner(make_app(store, api), shutdown_timeout=2.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    api.server_address = f"{settings.host}:{port}"

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    controllers = _start_controllers(store, settings)
    exit_code = 0
    if controllers is not None:
        controllers.add_done_callback(lambda t: stop.set())
    server = f"http://{settings.host}:{port}"
    kubeconfig.write(kc_path, server, api.token)
    log.info("serving the Kubernetes API on %s (state in %s)", server, settings.state_dir)
    await stop.wait()
    log.info("stopping")
    if controllers is not None:
        if controllers.done() and not controllers.cancelled() and controllers.exception():
            log.error("controllers failed", exc_info=controllers.exception())
            exit_code = 1
        controllers.cancel()
        try:
            await controllers
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("controllers failed while stopping")
            exit_code = 1
    store.close()  # ends open watch streams so the HTTP server can close
    kc_path.unlink(missing_ok=True)
    await runner.cleanup()
    return exit_code


def _start_controllers(store, settings: ServeSettings) -> asyncio.Task | None:
    try:
        controllers = importlib.import_module("localcluster.controllers")
    except ModuleNotFoundError as e:
        if e.name != "localcluster.controllers":
            raise
        log.warning("localcluster.controllers is missing: serving without controllers")
        return None
    return asyncio.ensure_future(controllers.run_controllers(
        store, state_dir=settings.state_dir, image_files=list(settings.images)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from localcluster.stack import demo_main
        return demo_main(argv[1:]) or 0
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ServeSettings(state_dir=args.state_dir.resolve(), port=args.port,
                             images=[p.resolve() for p in args.images], history=args.history,
                             bookmark_interval=args.bookmark_interval)
    return asyncio.run(_serve(settings))


if __name__ == "__main__":
    sys.exit(main())
