"""The node killed (SIGKILL) while 500 results are being finished and reported, and started again:
the server gets each result exactly once, with the run's own output, and every Job is deleted.

Real processes (local cluster, server, proxy, node). The 500 pods are released together: each
blocks opening a FIFO in the mounted "gate" folder until the test opens it. The node is killed
once the server has half of the results: by then the node has ended more runs than the server
has results, so some results are in its outbox, some only being read, and some Jobs not deleted. What the pods are is
the `pods` fixture's business, so another pod source (a simulated runtime whose pods end by
themselves) can replace the process runtime without touching the test.
"""
from __future__ import annotations

import errno
import os
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import socketio
from kubernetes import client, config

from localcluster.stack import JOBS_NAMESPACE, Stack, wait_for
from node import reporting
from tests.integration.support import TEST_IMAGES, node_spec, pytestmark  # noqa: F401
from tests.reliability.checks import TERMINAL, outbox_empty, started_per_run

RUNS = 500
# Room for 500 pods on the stand-in's one Node, and small requests for each.
ROOM = ["--cpu", "1000", "--memory", "4Ti", "--pods", "2000", "--log-level", "WARNING"]
JOB = {"resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                     "limits": {"cpu": "1", "memory": "64Mi"}},
       "deadline_seconds": 600, "termination_grace_seconds": 1}


@dataclass
class GatedProcessPods:
    """Pods as local processes (the stand-in's process runtime), each a shell blocked on the
    gate FIFO until `release`."""
    gate: Path
    image: str = "test/gate"
    cluster_args: list[str] = field(default_factory=list)
    cluster_pid: int | None = None

    @property
    def node_databases(self) -> list[dict]:
        return [{"label": "gate", "uri": str(self.gate), "type": "folder"}]

    task_databases = ["gate"]

    def waiting(self) -> int:
        """Containers of the cluster (its child processes) blocked on the gate."""
        n = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
                if parent != self.cluster_pid:
                    continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"gate/fifo" in f.read():
                        n += 1
            except (OSError, ValueError, IndexError):
                continue
        return n

    def release(self) -> None:
        """Open and close the FIFO for writing: every reader blocked in open() sees EOF; again
        for any that came late."""
        def none_left() -> bool:
            try:
                os.close(os.open(self.gate / "fifo", os.O_WRONLY | os.O_NONBLOCK))
            except OSError as e:
                if e.errno != errno.ENXIO:  # ENXIO: no reader at the moment
                    raise
            return self.waiting() == 0
        wait_for(none_left, 30, "every pod to be released")


@pytest.fixture
def pods(tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    os.chmod(gate, 0o755)
    os.mkfifo(gate / "fifo")
    os.chmod(gate / "fifo", 0o666)
    return GatedProcessPods(gate)


class Results:
    """A researcher's socket: every `task_result` the server emits, counted per run."""

    def __init__(self, url: str, key: str):
        self.seen: Counter = Counter()
        self.data: dict[int, dict] = {}
        self.cond = threading.Condition()
        self.sio = socketio.Client(reconnection=True)
        self.sio.on("task_result", self._on_result)
        self.sio.connect(url, auth={"api_key": key}, transports=["websocket"], wait_timeout=10)

    def _on_result(self, data: dict) -> None:
        with self.cond:
            self.seen[int(data["run_id"])] += 1
            self.data[int(data["run_id"])] = data
            self.cond.notify_all()

    def wait(self, pred, timeout: float, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: pred(len(self.seen)), timeout):
                raise AssertionError(f"{what}: {len(self.seen)} results after {timeout:.0f}s")

    def close(self) -> None:
        self.sio.disconnect()


@pytest.fixture
def stack(tmp_path, pods):
    s = Stack(tmp_path / "stack", pod_network="host")  # isolation is not what this is about
    try:
        s.start_cluster(images=[TEST_IMAGES], extra_args=ROOM + pods.cluster_args)
        pods.cluster_pid = s.cluster.pid
        # no live channel: a sidecar process per pod would double the processes here
        s.start_server([node_spec("node-a", pods.node_databases, job=JOB,
                                  live={"enabled": False})])
        s.start_proxy()
        s.start_node("node-a")
        yield s
    finally:
        s.close()


def test_node_killed_while_500_results_finish_reports_each_exactly_once(stack, pods):
    t0 = time.monotonic()
    results = Results(stack.server_url, stack.researcher_key)
    try:
        run_ids = [stack.create_task(image=pods.image, input={}, databases=pods.task_databases,
                                     nodes=["node-a"])["runs"][0]["id"] for _ in range(RUNS)]
        wait_for(lambda: pods.waiting() >= RUNS, 120, f"{RUNS} pods at the gate", interval=0.5)
        t_in_flight = time.monotonic()
        assert not results.seen, "a run ended before its release"
        pods.release()
        results.wait(lambda n: n >= RUNS // 2, 60, "half of the results")
        stack.stop_node("node-a", sig=signal.SIGKILL)
        at_kill = len(results.seen)
        stack.start_node("node-a")
        results.wait(lambda n: n >= RUNS, 120, "every result after the restart")
        t_results = time.monotonic()
        assert at_kill < RUNS, "every result was in before the kill: nothing was tested"

        # each run: one result, its own output, one final status, its container started once
        assert set(results.seen) == set(run_ids)
        twice = {r: n for r, n in results.seen.items() if n != 1}
        assert not twice, f"results emitted more than once: {twice}"
        for run_id in run_ids:
            got = results.data[run_id]
            assert (got["status"], got["data"].strip()) == ("completed", f"run {run_id}"), got
        for run_id in run_ids:
            run = stack.api("GET", f"/api/run/{run_id}").json()
            finals = [h["status"] for h in run["history"] if h["status"] in TERMINAL]
            assert finals == ["completed"], (run_id, finals)
        log = (stack.workdir / "logs" / "node-node-a.log").read_text()
        # results acknowledged by the server but not yet marked delivered when the node died are
        # sent once more (the server answers "duplicate"): at most one batch of the reporter's
        assert log.count("was already stored at the server") <= reporting.BATCH
        assert len(re.findall(r"run \d+: adopting", log)) == 0  # known from its ledger

        api = config.new_client_from_config(config_file=str(stack.kubeconfig))
        try:
            batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
            wait_for(lambda: not batch.list_namespaced_job(JOBS_NAMESPACE).items
                     and not core.list_namespaced_pod(JOBS_NAMESPACE).items, 60,
                     "every Job and pod to be deleted", interval=0.5)
            starts = started_per_run(api)
        finally:
            api.close()
        assert {r: starts.get(r, 0) for r in run_ids if starts.get(r, 0) != 1} == {}
        wait_for(lambda: outbox_empty(stack, "node-a"), 30, "the node's outbox to empty")
        assert stack.procs["node-node-a"].alive()
        first, second = log.split("node node-a started", 2)[1:3]
        ended = [len(re.findall(r"node\.agent: run \d+: completed", life)) for life in (first, second)]
        print(f"\n{RUNS} runs: in flight after {t_in_flight - t0:.1f}s; at the kill {at_kill} results "
              f"at the server and {ended[0]} runs ended by the node; {ended[1]} ended after the "
              f"restart; all results {t_results - t_in_flight:.1f}s after the release")
    finally:
        results.close()
