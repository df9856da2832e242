"""Helpers of the probe tests: a small HTTP server image command, pods, and reading statuses
and events of an in-process cluster (`kubelet_fixtures.InProcess`)."""
from __future__ import annotations

import socket

from .kubelet_fixtures import InProcess

LOOP = "trap 'exit 0' TERM; while true; do sleep 0.05; done"
# A small HTTP server on the pod IP: `PORT [--listen-after FILE] [--ok-if FILE]
# [--want-header NAME=VALUE]`. It listens only once FILE exists, answers 200 while `--ok-if`
# FILE exists (503 otherwise) and 400 without the wanted header.
SERVER = r"""
import http.server, os, sys, time
args = sys.argv[1:]
port, opts = int(args[0]), dict(zip(args[1::2], args[2::2]))
while "--listen-after" in opts and not os.path.exists(opts["--listen-after"]):
    time.sleep(0.02)
want = opts.get("--want-header", "=").split("=", 1)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200
        if want[0] and self.headers.get(want[0]) != want[1]:
            code = 400
        elif "--ok-if" in opts and not os.path.exists(opts["--ok-if"]):
            code = 503
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer((os.environ["POD_IP"], port), H).serve_forever()
"""
POD_IP_ENV = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server(name: str, port: int, *opts: str, **extra) -> dict:
    return {"name": name, "image": "test/root-python", "args": ["-c", SERVER, str(port), *opts],
            "env": POD_IP_ENV, "ports": [{"name": "http", "containerPort": port}], **extra}


def fast(handler: dict, **params) -> dict:
    return {**handler, "periodSeconds": 1, **params}


def pod_of(name: str, containers: list[dict], init: list[dict] | None = None,
           restart: str = "Never", **spec) -> dict:
    pod = {"metadata": {"name": name}, "spec": {
        "restartPolicy": restart, "terminationGracePeriodSeconds": 5, "containers": containers,
        **spec}}
    if init:
        pod["spec"]["initContainers"] = init
    return pod


def status(h: InProcess, pod: str) -> dict:
    return (h.pod(pod) or {}).get("status") or {}


def cstatus(h: InProcess, pod: str, container: str) -> dict:
    st = status(h, pod)
    for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        if cs["name"] == container:
            return cs
    return {}


def condition(h: InProcess, pod: str, ctype: str) -> dict:
    for c in status(h, pod).get("conditions") or []:
        if c["type"] == ctype:
            return c
    return {}


def events(h: InProcess, pod: str, reason: str | None = None,
           container: str | None = None) -> list[dict]:
    """The pod's events in the order they were recorded."""
    found = [e for e in h.events(pod) if reason is None or e["reason"] == reason]
    if container is not None:
        found = [e for e in found if e["involvedObject"].get("fieldPath", "").endswith(
            f"{{{container}}}")]
    return sorted(found, key=lambda e: int(e["metadata"]["resourceVersion"]))


def first_rv(h: InProcess, pod: str, reason: str, container: str) -> int:
    evs = events(h, pod, reason, container)
    assert evs, f"no {reason} event for {container}"
    return int(evs[0]["metadata"]["resourceVersion"])


def messages(h: InProcess, pod: str, reason: str, container: str | None = None) -> list[str]:
    return [e["message"] for e in events(h, pod, reason, container)]
