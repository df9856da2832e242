"""Liveness and readiness over HTTP, for the Deployment's probes.

- `/healthz` (liveness): the agent thread is alive and has looped recently.
- `/readyz` (readiness): also the cluster view is current (watchers or poller healthy).
The server connection is reported but does not make the node unready: results wait in the outbox.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

log = logging.getLogger(__name__)


class HealthServer:
    def __init__(self, host: str, port: int, probe: Callable[[], dict]):
        self.probe = probe
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                state = outer.probe()
                if self.path == "/healthz":
                    ok = state["alive"]
                elif self.path == "/readyz":
                    ok = state["alive"] and state["cluster"]
                else:
                    self.send_error(404)
                    return
                body = json.dumps(state).encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # probes every few seconds: keep the log quiet
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="health",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("health endpoint on http://%s:%d/healthz and /readyz",
                 self.httpd.server_address[0], self.port)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


def agent_alive(heartbeat: float, thread_alive: bool, max_age: float = 30.0) -> bool:
    return thread_alive and time.monotonic() - heartbeat < max_age
