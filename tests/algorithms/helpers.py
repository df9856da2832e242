"""Helpers for the algorithm tests: the container env of CONTRACTS §5 pointing at temporary
directories, a way to run an algorithm as a real subprocess, and a tiny fake server API."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 60


@dataclass
class Pod:
    """The directories and env of one algorithm run, as the node would set them up."""

    root: Path
    env: dict[str, str]

    @property
    def input_file(self) -> Path:
        return Path(self.env["INPUT_FILE"])

    @property
    def output_file(self) -> Path:
        return Path(self.env["OUTPUT_FILE"])

    def write_input(self, value) -> None:
        self.input_file.write_text(json.dumps(value))

    def output_json(self):
        return json.loads(self.output_file.read_text())


def make_pod(root: Path, *, databases: dict[str, Path] | None = None, run_id: int = 1,
             task_id: int = 1, node_id: str = "node-a", token: str = "container-token",
             proxy_port: int = 9) -> Pod:
    task, output, tmp = root / "task", root / "output", root / "tmp"
    for d in (task, output, tmp):
        d.mkdir(parents=True, exist_ok=True)
    (task / "token").write_text(token)
    (task / "input").write_text("{}")
    databases = databases or {}
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "PYTHONDONTWRITEBYTECODE": "1",
        "RUN_ID": str(run_id), "TASK_ID": str(task_id), "NODE_ID": node_id,
        "INPUT_FILE": str(task / "input"), "TOKEN_FILE": str(task / "token"),
        "OUTPUT_DIR": str(output), "OUTPUT_FILE": str(output / "output"), "TMP_DIR": str(tmp),
        "DATABASE_LABELS": ",".join(databases),
        "HOST": "http://127.0.0.1", "PORT": str(proxy_port), "API_PATH": "/api",
    }
    for label, path in databases.items():
        suffix = label.upper().replace("-", "_")
        env[f"DATABASE_URI_{suffix}"] = str(path)
        env[f"DATABASE_TYPE_{suffix}"] = "csv"
    return Pod(root=root, env=env)


def run_algorithm(module: str, pod: Pod, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], env=pod.env, cwd=pod.root,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- a fake server API (CONTRACTS §3), just enough for subtasks ---------------------------------

@dataclass
class FakeApi:
    """In-memory tasks and runs. `tokens` maps a bearer token to the task it belongs to."""

    tokens: dict[str, int] = field(default_factory=dict)
    tasks: dict[int, dict] = field(default_factory=dict)
    runs: dict[int, dict] = field(default_factory=dict)
    created: list[dict] = field(default_factory=list)   # POST /api/task bodies, with parent_id
    requests: list[str] = field(default_factory=list)    # "GET /api/task/2", ...
    list_results_in_task: bool = False   # GET /task/<id> lists full runs (else id/node/status)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_id: int = 1

    def add_task(self, nodes: list[str], token: str, image: str = "v6-demo/avg",
                 parent_id: int | None = None) -> int:
        with self.lock:
            task_id = self._new_task(image, nodes, parent_id)
            self.tokens[token] = task_id
            return task_id

    def _new_task(self, image: str, nodes: list[str], parent_id: int | None) -> int:
        task_id = self.next_id
        self.next_id += 1
        run_ids = []
        for node in nodes:
            run_id = self.next_id
            self.next_id += 1
            self.runs[run_id] = {"id": run_id, "task_id": task_id, "node_id": node,
                                 "status": "pending", "history": [], "result": None}
            run_ids.append(run_id)
        self.tasks[task_id] = {"id": task_id, "parent_id": parent_id, "image": image,
                               "nodes": nodes, "run_ids": run_ids}
        return task_id

    def set_run(self, run_id: int, status: str, data=None, logs: str = "") -> None:
        with self.lock:
            run = self.runs[run_id]
            run["status"] = status
            if status not in ("pending", "initializing", "active"):
                run["result"] = {"data": data, "logs": logs, "status": status}

    def task_view(self, task_id: int) -> dict:
        task = self.tasks[task_id]
        runs = [dict(self.runs[r]) for r in task["run_ids"]]
        if not self.list_results_in_task:
            runs = [{"id": r["id"], "node_id": r["node_id"], "status": r["status"]} for r in runs]
        statuses = {r["status"] for r in runs}
        status = "completed" if statuses == {"completed"} else "active"
        return {"id": task_id, "parent_id": task["parent_id"], "image": task["image"],
                "status": status, "runs": runs}

    def handle(self, method: str, path: str, token: str | None, body) -> tuple[int, object]:
        with self.lock:
            self.requests.append(f"{method} {path}")
            if token not in self.tokens:
                return 401, {"error": "invalid token"}
            own = self.tokens[token]
            if method == "GET" and path == "/api/version":
                return 200, {"version": "6.0.0-test"}
            if method == "POST" and path == "/api/task":
                if not isinstance(body, dict) or not isinstance(body.get("image"), str) \
                        or not isinstance(body.get("databases"), list):
                    return 400, {"error": "image and databases are required"}
                nodes = body.get("nodes") or self.tasks[own]["nodes"]
                task_id = self._new_task(body["image"], nodes, parent_id=own)
                self.created.append(dict(body, parent_id=own, id=task_id))
                runs = [{"id": r, "node_id": self.runs[r]["node_id"]}
                        for r in self.tasks[task_id]["run_ids"]]
                return 201, {"id": task_id, "runs": runs}
            parts = path.strip("/").split("/")
            if method == "GET" and len(parts) == 3 and parts[2].isdigit():
                ident = int(parts[2])
                if parts[1] == "task" and ident in self.tasks:
                    return 200, self.task_view(ident)
                if parts[1] == "run" and ident in self.runs:
                    return 200, dict(self.runs[ident])
            return 404, {"error": f"no such resource {path}"}


class FakeServer:
    """FakeApi over HTTP on 127.0.0.1:<ephemeral>. `on_task(task)` (optional) runs in a worker
    thread for each task created through POST /api/task."""

    def __init__(self, api: FakeApi, on_task=None) -> None:
        self.api = api
        self.on_task = on_task
        self._jobs: queue.Queue = queue.Queue()
        self.errors: list[BaseException] = []
        api_ref, jobs = api, self._jobs

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                auth = self.headers.get("Authorization", "")
                token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
                code, answer = api_ref.handle(method, self.path, token, body)
                if code == 201 and method == "POST":
                    jobs.put(answer["id"])
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._answer("GET")

            def do_POST(self):
                self._answer("POST")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = False
        self.port = self.httpd.server_address[1]
        self._serve = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="fake-server")
        self._worker = threading.Thread(target=self._work, name="fake-server-worker")

    def _work(self) -> None:
        while True:
            task_id = self._jobs.get()
            if task_id is None:
                return
            if self.on_task is not None:
                try:
                    self.on_task(task_id)
                except BaseException as e:  # surfaced by the test through .errors
                    self.errors.append(e)

    def __enter__(self) -> "FakeServer":
        self._serve.start()
        self._worker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._jobs.put(None)
        self._worker.join()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._serve.join()
