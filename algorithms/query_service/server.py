"""The HTTP side of the query service: GET /ready, /columns, /count, /mean?column=X.

Every request is logged to stdout as ``<monotonic seconds> <method> <path> <status> <agent>``,
so a test can put the service's answers and the algorithm's requests on one clock.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .table import QueryError, Table

_print_lock = threading.Lock()


def log_line(text: str) -> None:
    with _print_lock:
        print(f"{time.monotonic():.6f} {text}", file=sys.stdout, flush=True)


class Handler(BaseHTTPRequestHandler):
    server: "QueryServer"
    protocol_version = "HTTP/1.1"
    server_version = "v6-query-service/1"

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        table = self.server.table
        try:
            if url.path == "/ready":
                self._send(200, {"ready": True})
            elif url.path == "/columns":
                self._send(200, {"columns": list(table.columns)})
            elif url.path == "/count":
                self._send(200, {"count": table.count})
            elif url.path == "/mean":
                columns = query.get("column", [])
                if len(columns) != 1 or not columns[0]:
                    raise QueryError(400, "give exactly one column: /mean?column=NAME")
                self._send(200, table.mean(columns[0]))
            else:
                raise QueryError(404, f"no such endpoint {url.path!r}; try /ready, /columns, "
                                      f"/count, /mean?column=NAME")
        except QueryError as e:
            self._send(e.status, {"error": str(e)})

    def _refuse(self) -> None:
        self._send(405, {"error": f"method {self.command} is not allowed: the service is read-only"})

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

    def _send(self, status: int, body: dict) -> None:
        # logged before the answer leaves: whoever got it finds the line written
        log_line(f"{self.command} {self.path[:200]} {status} {self.headers.get('User-Agent', '-')[:60]}")
        data = (json.dumps(body) + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - our own log_line instead
        pass


class QueryServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], table: Table) -> None:
        self.table = table
        super().__init__(address, Handler)
