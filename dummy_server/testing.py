"""Helpers for tests that need a real dummy server (and a fake node) — used by several test suites.

Nothing here sleeps to synchronise: every wait polls a condition with a deadline.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import socketio
import yaml

REPO = Path(__file__).resolve().parent.parent
TOKEN_SECRET = "test-only-token-secret-0123456789"
NODE_KEYS = {"node-a": "test-node-a-key", "node-b": "test-node-b-key"}
RESEARCHER_KEYS = {"alice": "test-alice-key", "bob": "test-bob-key-1"}


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def emitter_command(url: str, key: str, *args: str) -> tuple[list[str], dict]:
    """argv and environment to run the command emitter against ``url`` as a researcher."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "V6_SERVER_URL": url, "V6_RESEARCHER_KEY": key}
    return [sys.executable, "-m", "dummy_server.command_emitter", *args], env


class Process:
    """A child process that writes its bound port to a file once it serves."""

    def __init__(self, argv: list[str], workdir: Path, name: str, env: dict | None = None):
        self.argv, self.workdir, self.name = argv, workdir, name
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.port_file = workdir / f"{name}.port"
        self.log_file = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    def start(self, timeout: float = 20.0) -> "Process":
        self.port_file.unlink(missing_ok=True)
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(self.argv + ["--port-file", str(self.port_file)],
                                         cwd=REPO, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            return self.port_file.exists()

        wait_until(ready, timeout, f"{self.name} to serve")
        self.port = int(self.port_file.read_text())
        return self

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


class ServerProcess(Process):
    def __init__(self, workdir: Path, token_ttl_seconds: int = 3600, **extra):
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "server_config.yaml"
        config = {"host": "127.0.0.1", "port": 0, "database": str(workdir / "server.sqlite"),
                  "token_secret": TOKEN_SECRET, "token_ttl_seconds": token_ttl_seconds,
                  "nodes": [{"id": n, "api_key": k} for n, k in NODE_KEYS.items()],
                  "researchers": [{"name": n, "api_key": k} for n, k in RESEARCHER_KEYS.items()],
                  **extra}
        self.config_path.write_text(yaml.safe_dump(config))
        super().__init__([sys.executable, "-m", "dummy_server", "--config", str(self.config_path)],
                         workdir, "server")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restart(self) -> None:
        self.stop()
        self.start()


class FakeNode:
    """Plays a node over Socket.IO: records commands and, if asked, answers them."""

    def __init__(self, url: str, node_id: str, responder: Callable[["FakeNode", dict], None] | None = None):
        self.url, self.node_id = url, node_id
        self.commands: list[dict] = []   # first receipt of each run id, as a node keeps them
        self.received = 0                 # every receipt, resends included
        self.responder = responder
        self.sio = socketio.Client(reconnection=False)
        self.kills: list[dict] = []
        self.sio.on("command", self._on_command)
        self.sio.on("kill_task", self._on_kill)

    def _on_kill(self, data: dict) -> dict:
        self.kills.append(data)
        mine = [c["run_id"] for c in self.commands if c.get("task_id", c["run_id"]) == data.get("task_id")]
        return {"killed": mine, "not_running": [], "unknown": [] if mine else [data.get("task_id")]}

    def _on_command(self, data: dict) -> None:
        self.received += 1
        # Like the real node: a run id seen before is a (harmless) resend.
        if any(c.get("run_id") == data.get("run_id") for c in self.commands):
            return
        self.commands.append(data)
        if self.responder is not None:
            # Handlers run on the client's reader thread; acks need that thread free.
            self.sio.start_background_task(self.responder, self, data)

    def connect(self) -> "FakeNode":
        self.sio.connect(self.url, auth={"api_key": NODE_KEYS[self.node_id]},
                         transports=["websocket"], wait_timeout=10)
        self.sio.emit("node_connection_request", {"node_id": self.node_id, "version": "test"})
        return self

    def status(self, command: dict, status: str, detail: str | None = None) -> dict:
        return self.sio.call("algorithm_status_change", {
            "node_id": self.node_id, "run_id": command["run_id"],
            "task_id": command.get("task_id", command["run_id"]),
            "parent_id": command.get("parent_id"), "status": status, "detail": detail}, timeout=10)

    def result(self, command: dict, status: str, data: Any, logs: str = "") -> dict:
        return self.sio.call("run_result", {
            "run_id": command["run_id"], "task_id": command.get("task_id", command["run_id"]),
            "parent_id": command.get("parent_id"), "status": status, "data": data,
            "logs": logs}, timeout=10)

    def heartbeat(self, runs_active: int = 0) -> dict:
        return self.sio.call("node_heartbeat", {"sent_at": time.time(), "runs_active": runs_active,
                                                "version": "test"}, timeout=10)

    def close(self) -> None:
        self.sio.disconnect()


def answer(final: str, data: Any, logs: str = "") -> Callable[[FakeNode, dict], None]:
    """A responder that walks a run through initializing/active to ``final`` and reports."""

    def respond(node: FakeNode, command: dict) -> None:
        node.status(command, "initializing")
        node.status(command, "active")
        node.status(command, final, None if final == "completed" else "exit code 1")
        node.result(command, final, data, logs)

    return respond
