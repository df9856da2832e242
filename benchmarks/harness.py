"""The system under test, started for the benchmarks: local cluster, server and one node as real
processes (`localcluster.stack.Stack`), and what the benchmarks observe it with: the node's log
(millisecond timestamps), a researcher socket (arrival of `task_result`) and /proc."""
from __future__ import annotations

import logging
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import socketio

from localcluster.stack import JOBS_NAMESPACE, NodeSpec, Stack
from localcluster.testing import LocalCluster, LocalClusterError

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BENCH_IMAGES = HERE / "images.yaml"
NODE_ID = "bench-node"
# Small requests: the stand-in's kubelet adds them up against its allocatable resources.
BENCH_JOB = {"resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                           "limits": {"cpu": "1", "memory": "64Mi"}},
             "deadline_seconds": 1800, "termination_grace_seconds": 1}


class BenchError(Exception):
    pass


class BenchCluster(LocalCluster):
    """LocalCluster started through `benchmarks.cluster` (room for 1,000+ pods)."""

    def start(self) -> "BenchCluster":
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self._stderr_path, "wb") as stderr:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.cluster", "serve", *self._args],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=stderr, start_new_session=True)
        deadline = time.monotonic() + self._start_timeout
        while not self.kubeconfig.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                text = self.stderr()
                self.stop()
                raise LocalClusterError(f"benchmark cluster did not start:\n{text}")
            time.sleep(0.02)
        self._connect()
        return self

    @property
    def pid(self) -> int:
        return self._proc.pid


@dataclass
class Bench:
    """One local cluster + server + node (completion `mode`, live channel on or off), and the
    researcher's socket."""
    stack: Stack
    mode: str
    listener: "ResultListener"
    gate_dir: Path
    live: bool = True

    @property
    def cluster(self) -> BenchCluster:
        return self.stack.cluster

    @property
    def node_proc(self):
        return self.stack.procs[f"node-{NODE_ID}"]

    @property
    def node_pid(self) -> int:
        return self.node_proc.popen.pid

    def node_log(self) -> "NodeLog":
        return NodeLog.parse(self.node_proc.log_text())

    def submit(self, image: str, databases: list[str] | None = None) -> tuple[int, float]:
        """Create a one-run task; (run id, wall-clock time the server answered)."""
        task = self.stack.create_task(image=image, input={}, databases=databases or [],
                                      nodes=[NODE_ID])
        return task["runs"][0]["id"], time.time()

    def restart_node(self) -> None:
        self.stack.stop_node(NODE_ID)
        self.stack.start_node(NODE_ID)

    def close(self) -> None:
        self.listener.close()
        self.stack.close()


def start_bench(workdir: Path, mode: str, poll_interval: float = 1.0,
                cluster_args: list[str] | None = None, live: bool = True,
                images: list[Path] | None = None) -> Bench:
    """Start the cluster, server and node; the node finishes runs by `mode` (watch or poll),
    with the live channel on (the node's default) or off."""
    workdir.mkdir(parents=True, exist_ok=True)
    gate_dir = workdir / "gate"
    gate_dir.mkdir(exist_ok=True)
    os.chmod(gate_dir, 0o755)
    stack = Stack(workdir / "stack")
    listener = None
    try:
        state = stack.workdir / "cluster"
        state.mkdir(parents=True, exist_ok=True)
        stack.cluster = BenchCluster(images=[BENCH_IMAGES, *(images or [])], state_dir=state,
                                     extra_args=cluster_args or ["--log-level", "WARNING"])
        stack.cluster.start()
        stack.kubeconfig = Path(stack.cluster.kubeconfig)
        stack._ensure_namespace(JOBS_NAMESPACE)
        extra = {"images": {"allowed": ["bench/*"]}, "job": BENCH_JOB,
                 "completion": {"mode": mode, "poll_interval_seconds": poll_interval}}
        if not live:  # else the node's default: the live channel on
            extra["live"] = {"enabled": False}
        spec = NodeSpec(NODE_ID, f"key-{NODE_ID}-{secrets.token_hex(8)}",
                        [{"label": "gate", "uri": str(gate_dir), "type": "folder"}],
                        completion_mode=mode, extra=extra)
        stack.start_server([spec])
        stack.start_proxy()  # algorithm pods would reach the server through it
        stack.start_node(NODE_ID)
        listener = ResultListener(stack.server_url, stack.researcher_key)
    except BaseException:
        stack.close()
        raise
    return Bench(stack, mode, listener, gate_dir, live)


class ResultListener:
    """A researcher's socket: when each `task_result` and `task_progress` arrived (wall clock)
    and its data."""

    def __init__(self, url: str, key: str):
        self.results: dict[int, tuple[float, dict]] = {}
        self.progress: list[tuple[float, dict]] = []
        self._cond = threading.Condition()
        self.sio = socketio.Client(reconnection=True)
        self.sio.on("task_result", self._on_result)
        self.sio.on("task_progress", self._on_progress)
        self.sio.connect(url, auth={"api_key": key}, transports=["websocket"], wait_timeout=10)

    def _on_result(self, data: dict) -> None:
        at = time.time()
        with self._cond:
            self.results[int(data["run_id"])] = (at, data)
            self._cond.notify_all()

    def _on_progress(self, data: dict) -> None:
        at = time.time()
        with self._cond:
            self.progress.append((at, data))

    def wait(self, run_ids, timeout: float) -> None:
        want = set(run_ids)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not want <= self.results.keys():
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sorted(want - self.results.keys())
                    raise BenchError(f"{len(missing)} result(s) missing after {timeout:.0f}s, "
                                     f"e.g. runs {missing[:5]}")
                self._cond.wait(min(left, 1.0))

    def close(self) -> None:
        try:
            self.sio.disconnect()
        except Exception:  # noqa: BLE001 - already down
            pass


# "2026-11-23 14:50:50,123 INFO node.agent: run 5 (task 5): accepted, image bench/exit"
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ node\.(?:agent|live): run (\d+)"
                   r"(?: \(task \d+\))?: (.*)$")
TERMINAL = ("completed", "failed", "crashed", "start failed", "non-existing Docker image",
            "killed by user", "not allowed", "unknown error")


@dataclass
class NodeLog:
    """Per run: wall-clock time (s) of `accepted`, `created` (job created), `active`, `followed`
    (the live channel follows its sidecar) and `finished`."""
    accepted: dict[int, float] = field(default_factory=dict)
    created: dict[int, float] = field(default_factory=dict)
    active: dict[int, float] = field(default_factory=dict)
    followed: dict[int, float] = field(default_factory=dict)
    finished: dict[int, float] = field(default_factory=dict)
    final_status: dict[int, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "NodeLog":
        out = cls()
        for line in text.splitlines():
            m = _LINE.match(line)
            if not m:
                continue
            at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            run, what = int(m.group(2)), m.group(3)
            if what.startswith("accepted"):
                out.accepted[run] = at
            elif what.startswith("pending (job created)"):
                out.created[run] = at
            elif what == "active":
                out.active.setdefault(run, at)
            elif what.startswith("following its sidecar"):
                out.followed.setdefault(run, at)
            elif what.split(" (")[0] in TERMINAL and run not in out.finished:
                out.finished[run] = at
                out.final_status[run] = what.split(" (")[0]
        return out
