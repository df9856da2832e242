"""The command emitter's connection to the server: HTTP calls and a researcher socket for --wait."""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable

import requests
import socketio

TERMINAL = frozenset({"completed", "failed", "start failed", "non-existing Docker image", "crashed",
                      "killed by user", "not allowed", "unknown error"})


def node_state_line(event: dict) -> str:
    """A node's liveness change: ``node node-a is offline (was alive; last seen 17:02:03Z)``."""
    seen = event.get("last_seen")
    seen = (f"; last seen {time.strftime('%H:%M:%SZ', time.gmtime(seen))}"
            if isinstance(seen, (int, float)) and not isinstance(seen, bool) else "")
    return (f"node {event.get('node_id')} is {event.get('state')} "
            f"(was {event.get('previous')}{seen})")


def progress_line(event: dict, width: int = 20) -> str:
    """One progress report as a bar: ``task 1 run 1 on node-a: [#####.....]  50% message``."""
    fraction = event.get("progress")
    if isinstance(fraction, (int, float)) and not isinstance(fraction, bool):
        fraction = min(1.0, max(0.0, float(fraction)))
        filled = round(fraction * width)
        bar = f"[{'#' * filled}{'.' * (width - filled)}] {fraction * 100:3.0f}%"
    else:
        bar = f"[{'?' * width}]    "
    message = " ".join(str(event.get("message") or "").split())[:60]
    return (f"task {event.get('task_id')} run {event.get('run_id')} on {event.get('node_id')}: "
            f"{bar} {message}").rstrip()


class EmitterError(Exception):
    """A failure talking to the server; ``exit_code`` 2 for bad input, 1 otherwise."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class ServerClient:
    def __init__(self, url: str, key: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self._key = key
        self._timeout = timeout
        self._http = requests.Session()
        self._http.headers["Authorization"] = f"Bearer {key}"

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs) -> Any:
        try:
            resp = self._http.request(method, self.url + path, timeout=self._timeout, **kwargs)
        except requests.RequestException as e:
            raise EmitterError(f"cannot reach the server at {self.url} ({type(e).__name__})") from e
        try:
            body = resp.json()
        except ValueError:
            body = {"error": resp.text[:200]}
        if resp.status_code >= 400:
            code = 2 if resp.status_code in (400, 413) else 1
            raise EmitterError(f"server answered {resp.status_code}: {body.get('error', body)}", code)
        return body

    def create_task(self, body: dict) -> dict:
        return self._call("POST", "/api/task", json=body)

    def explain_task(self, body: dict) -> dict:
        return self._call("POST", "/api/explain", json=body)

    def get_task(self, task_id: int) -> dict:
        return self._call("GET", f"/api/task/{task_id}")

    def kill_task(self, task_id: int) -> dict:
        return self._call("POST", f"/api/task/{task_id}/kill")

    def socket(self, on_event: Callable[[str, dict], None]) -> socketio.Client:
        """A connected researcher socket that passes task events to ``on_event``."""
        sio = socketio.Client(reconnection=False)
        refusal: list[Any] = []
        sio.on("task_status", lambda data: on_event("task_status", data))
        sio.on("task_result", lambda data: on_event("task_result", data))
        sio.on("task_progress", lambda data: on_event("task_progress", data))
        sio.on("command_error", lambda data: on_event("command_error", data))
        sio.on("node_state", lambda data: on_event("node_state", data))
        sio.on("connect_error", lambda data: refusal.append(data))
        try:
            sio.connect(self.url, auth={"api_key": self._key}, transports=["websocket"],
                        wait_timeout=self._timeout)
        except socketio.exceptions.ConnectionError as e:
            if refusal and isinstance(refusal[0], dict) and refusal[0].get("message"):
                raise EmitterError(f"the server refused the connection: {refusal[0]['message']}") from e
            raise EmitterError(f"cannot reach the server at {self.url} (socket)") from e
        return sio


class Waiter:
    """Prints live status lines as events arrive and waits until every run has its result."""

    def __init__(self, client: ServerClient, out=sys.stderr):
        self.client = client
        self.task_ids: set[int] = set()
        self.node_ids: set[str] = set()   # nodes of the tasks followed: their state changes show
        self._changed = threading.Event()
        self._out = out

    def on_event(self, event: str, data: dict) -> None:
        if not isinstance(data, dict):
            return
        if event == "command_error":
            print(f"server refused run {data.get('run_id')}: {data.get('error')}", file=self._out)
        elif event == "node_state":
            if data.get("node_id") in self.node_ids:
                print(node_state_line(data), file=self._out, flush=True)
            return  # not a change in the runs' state
        elif data.get("task_id") in self.task_ids:
            if event == "task_progress":
                print(progress_line(data), file=self._out, flush=True)
                return  # progress is not a change in the runs' state
            if event == "task_status":
                detail = f" ({data['detail']})" if data.get("detail") else ""
                print(f"task {data['task_id']} run {data['run_id']} on {data['node_id']}: "
                      f"{data['status']}{detail}", file=self._out, flush=True)
            else:
                print(f"task {data['task_id']} run {data['run_id']} on {data['node_id']}: "
                      f"result received ({data['status']})", file=self._out, flush=True)
        self._changed.set()

    def follow(self, answer: dict) -> None:
        """Follow a created task (HTTP answer or legacy ack); print the server's warnings."""
        self.task_ids.add(answer["id"] if "id" in answer else answer["task_id"])
        self.node_ids.update(r["node_id"] for r in answer.get("runs", []))
        self.node_ids.update(answer.get("nodes", []))
        for warning in answer.get("warnings", []):
            print(f"warning: {warning}", file=self._out, flush=True)

    def wait(self, timeout: float) -> tuple[list[dict], bool]:
        """Return (task views, finished) once every run has a result or at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()
            tasks = [self.client.get_task(t) for t in sorted(self.task_ids)]
            if all(run["result"] is not None for t in tasks for run in t["runs"]):
                return tasks, True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return tasks, False
            # Events wake us at once; the periodic re-read covers events lost on reconnects.
            self._changed.wait(min(remaining, 2.0))
