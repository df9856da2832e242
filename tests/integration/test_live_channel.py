"""The live channel end to end: a sidecar in the algorithm's pod, the node following it over
ZeroMQ, progress reaching the researcher's emitter in order, ping/pong, a sidecar that stops
answering, and the monitor."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import zmq

from localcluster.stack import REPO, free_port, wait_for
from node import live_frames as F
from tests.integration.support import needs_root, node_spec, pids_of

pytestmark = [pytest.mark.integration, needs_root]

TOTAL = 5


def sidecar_pid(run_id: int) -> int | None:
    """The process of the run's sidecar container (`python -m node sidecar`, RUN_ID=<run>)."""
    pids = pids_of(lambda argv: argv[-3:-1] == [b"node", b"sidecar"], f"RUN_ID={run_id}")
    return pids[0] if pids else None


class NodeEvents:
    """Reads the node's PUB socket, as the monitor does."""

    def __init__(self, port: int) -> None:
        self.sub = zmq.Context.instance().socket(zmq.SUB)
        self.sub.linger = 0
        self.sub.setsockopt_string(zmq.SUBSCRIBE, "")
        self.sub.connect(f"tcp://127.0.0.1:{port}")
        self.seen: list[tuple[str, str, dict]] = []

    def read(self) -> list[tuple[str, str, dict]]:
        while self.sub.poll(50):
            self.seen.append(F.decode(self.sub.recv_multipart()))
        return self.seen

    def latest_run(self) -> dict | None:
        snaps = [b for _, k, b in self.read() if k == F.SNAPSHOT and b["runs"]]
        return snaps[-1]["runs"][0] if snaps else None

    def health(self, run_id: int) -> list[str]:
        return [b["state"] for r, k, b in self.read() if k == F.HEALTH and r == str(run_id)]

    def close(self) -> None:
        self.sub.close()


def percentages(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"\] +(\d+)% step", text)]


def test_progress_ping_unresponsive_sidecar_and_monitor(stack_factory, tmp_path):
    pub = free_port()
    spec = node_spec("node-a", live={"enabled": True, "heartbeat_seconds": 0.2,
                                     "suspect_after": 3, "fail_after": 6, "node_pub_port": pub})
    stack = stack_factory([spec])
    assert "cluster runs Kubernetes v1.30.0; live channel on" in \
        stack.procs["node-node-a"].log_text()
    events = NodeEvents(pub)
    err_path = tmp_path / "emitter.err"
    with open(err_path, "w") as err:
        emitter = subprocess.Popen(
            [sys.executable, "-m", "dummy_server.command_emitter", "--server", stack.server_url,
             "--key", stack.researcher_key, "task", "--image", "test/progress",
             "--input", json.dumps({"before": 3, "after": TOTAL - 3}), "--wait",
             "--timeout", "120"],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
            stderr=err, text=True)
    stopped_pid = None
    try:
        # progress while the algorithm runs: the first three steps reach the emitter, in order
        run = wait_for(lambda: (r := events.latest_run()) and r["seq"] >= 3 and r, 60,
                       "the node to follow the run and see three steps")
        run_id = run["run_id"]
        assert run["health"] == "alive" and run["status"] == "active"
        wait_for(lambda: percentages(err_path.read_text()) == [20, 40, 60], 20,
                 "three progress bars at the emitter")

        # ping -> pong, straight to the sidecar on the pod IP, while the algorithm runs
        pod_ip = wait_for(lambda: _pod_ip(stack, run_id), 10, "the pod's IP")
        req = zmq.Context.instance().socket(zmq.REQ)
        req.linger = 0
        try:
            req.connect(f"tcp://{pod_ip}:5556")
            req.send_multipart(F.encode(str(run_id), F.PING, {"after": 3}))
            assert req.poll(10_000), "the sidecar did not answer"
            rid, kind, body = F.decode(req.recv_multipart())
        finally:
            req.close()
        assert (rid, kind, body["state"], body["seq"], body["progress"]) == \
            (str(run_id), F.PONG, "running", 3, [])

        # the monitor lists the run
        mon = subprocess.run([sys.executable, "-m", "node", "monitor", "--connect",
                              f"tcp://127.0.0.1:{pub}", "--once"], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                             text=True, timeout=30)
        assert mon.returncode == 0, mon.stderr
        row = next(line.split() for line in mon.stdout.splitlines()
                   if line.split()[:1] == [str(run_id)])
        assert row[2] == "active" and "60%" in row and "alive" in row

        # the sidecar stops answering (frozen): the node flags the run, then clears the flag
        stopped_pid = wait_for(lambda: sidecar_pid(run_id), 10, "the sidecar's process")
        os.kill(stopped_pid, signal.SIGSTOP)
        wait_for(lambda: events.health(run_id)[-2:] == ["suspected", "failed"], 20,
                 "the node to flag the run unresponsive")
        assert "is unresponsive" in stack.procs["node-node-a"].log_text()
        os.kill(stopped_pid, signal.SIGCONT)
        stopped_pid = None
        wait_for(lambda: events.health(run_id)[-1:] == ["alive"], 20, "the run alive again")

        # the other steps, while the algorithm still runs: each once, in order
        tmp = stack.workdir / "nodes" / "node-a" / "tasks" / "runs" / str(run_id) / "tmp"
        (tmp / "release").touch()
        wait_for(lambda: percentages(err_path.read_text()) == [20, 40, 60, 80, 100], 20,
                 "all five progress bars at the emitter")
        view = stack.api("GET", f"/api/run/{run_id}").json()
        assert view["progress"] == {"seq": TOTAL, "progress": 1.0,
                                    "message": f"step {TOTAL} of {TOTAL}"}

        (tmp / "finish").touch()
        out, _ = emitter.communicate(timeout=60)
        err_text = err_path.read_text()
        assert emitter.returncode == 0, err_text
        assert percentages(err_text) == [20, 40, 60, 80, 100]
        assert json.loads(out)["tasks"][0]["runs"][0]["result"]["data"] == "done"
    finally:
        if stopped_pid is not None:
            os.kill(stopped_pid, signal.SIGCONT)
        if emitter.poll() is None:
            emitter.kill()
            emitter.communicate()
        events.close()


def _pod_ip(stack, run_id: int) -> str | None:
    from kubernetes import client, config
    api = config.new_client_from_config(config_file=str(stack.kubeconfig))
    try:
        pods = client.CoreV1Api(api).list_namespaced_pod(
            "v6-jobs", label_selector=f"v6.run-id={run_id}").items
    finally:
        api.close()
    return next((p.status.pod_ip for p in pods if p.status.phase == "Running"), None)



def test_progress_written_just_before_the_algorithm_ends_is_not_lost(stack_factory):
    # the live channel is on by default; the algorithm reports five steps and exits at once, so
    # the last lines reach the sidecar only as the pod ends (the sidecar is stopped after it)
    stack = stack_factory([node_spec("node-a")])
    task = stack.create_task(image="test/progress", input={"before": 0, "after": 5, "wait": False},
                             databases=[], nodes=["node-a"])
    run = stack.wait_task(task["id"], timeout=60)["runs"][0]
    assert run["status"] == "completed", run
    view = stack.api("GET", f"/api/run/{run['id']}").json()
    assert view["progress"] == {"seq": 5, "progress": 1.0, "message": "step 5 of 5"}
