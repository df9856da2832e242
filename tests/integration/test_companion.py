"""Companion services end to end (CONTRACTS §10): a task's `service` runs as a native sidecar of
its algorithm's pod on the local cluster; the algorithm starts only once the service is ready, the
service is stopped after it, and a service that never becomes ready fails the run clearly."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from kubernetes import client, config, watch

from localcluster.stack import DEMO_CSV, JOBS_NAMESPACE, free_port, wait_for
from tests.integration.support import needs_root, pids_of

pytestmark = [pytest.mark.integration, needs_root]

SERVICE_IMAGE = "v6-demo/query-service"
CHECK_LINE = re.compile(r"^(\d+\.\d+) GET (\S+) (\d{3}) (.*)$")


def mean_of(path: Path, column: str) -> tuple[float, int]:
    with open(path, newline="") as f:
        values = [float(row[column]) for row in csv.DictReader(f)]
    return sum(values) / len(values), len(values)


def service(port: int, **over) -> dict:
    svc = {"image": SERVICE_IMAGE, "port": port, "readiness": {"http_path": "/ready"},
           "databases": ["default"], "ready_timeout_seconds": 20}
    svc.update(over)
    return svc


def service_pids(port: int) -> list[int]:
    """Processes of a query service listening on `port` (SERVICE_PORT=<port> in its env)."""
    return pids_of(lambda argv: b"algorithms.query_service" in argv, f"SERVICE_PORT={port}")


def container_log(logs: str, container: str) -> list[str]:
    """The lines of one container's section in a run's collected logs."""
    lines, inside = [], False
    for line in logs.splitlines():
        if line.startswith("=== pod "):
            inside = line.rstrip().endswith(f"container {container} ===")
            continue
        if inside:
            lines.append(line)
    return lines


class PodHistory:
    """Every state of the run's pod, from a watch started before the task (raw API objects)."""

    def __init__(self, stack) -> None:
        self.api = config.new_client_from_config(config_file=str(stack.kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.rv = self.core.list_namespaced_pod(JOBS_NAMESPACE).metadata.resource_version
        self.states: list[dict] = []

    def follow(self, run_id: int, on_state=lambda pod: None, timeout: int = 90) -> None:
        """Until the run's pod is deleted (the node removes the Job once the run is over)."""
        w = watch.Watch()
        try:
            for event in w.stream(self.core.list_namespaced_pod, JOBS_NAMESPACE,
                                  label_selector=f"v6.run-id={run_id}", resource_version=self.rv,
                                  timeout_seconds=timeout):
                self.states.append(event["raw_object"])
                on_state(event["raw_object"])
                if event["type"] == "DELETED":
                    return
        finally:
            w.stop()
        raise AssertionError(f"the pod of run {run_id} was not deleted within {timeout}s")

    def close(self) -> None:
        self.api.close()


def statuses_of(pod: dict) -> dict[str, dict]:
    status = pod.get("status") or {}
    return {cs["name"]: cs for cs in (status.get("initContainerStatuses") or [])
            + (status.get("containerStatuses") or [])}


@pytest.fixture
def stack(shared_stack):
    return shared_stack  # one node-a with the demo database, for this module's tests


def test_the_service_is_ready_before_the_algorithm_asks_and_stopped_after_it(stack):
    port = free_port()
    pods = PodHistory(stack)
    try:
        task = stack.create_task(image="v6-demo/avg-service", input={"column": "Age"},
                                 databases=["default"], nodes=["node-a"], service=service(port))
        run_id = task["runs"][0]["id"]
        alive: list[list[int]] = []  # the service's processes, seen once it had started

        def look(pod: dict) -> None:
            if not alive and statuses_of(pod).get("service", {}).get("started"):
                alive.append(service_pids(port))
        pods.follow(run_id, look)
    finally:
        pods.close()
    [run] = stack.wait_task(task["id"])["runs"]
    result = run["result"]
    assert run["status"] == "completed", result["logs"]
    mean, count = mean_of(DEMO_CSV, "Age")
    assert json.loads(result["data"]) == {"mean": pytest.approx(mean), "count": count}

    # on one clock (both log CLOCK_MONOTONIC): the service answered the kubelet's /ready before
    # the algorithm's first request, which was its first /mean
    checks = [m.groups() for m in map(CHECK_LINE.match, container_log(result["logs"], "service")) if m]
    first_ready = min(float(t) for t, path, code, _ in checks if path == "/ready" and code == "200")
    queries = [(float(t), code) for t, path, code, _ in checks if path.startswith("/mean")]
    assert queries == [(queries[0][0], "200")], checks
    asked = [float(m.group(1)) for line in container_log(result["logs"], "algorithm")
             if (m := re.search(r"first request to the service at monotonic (\d+\.\d+)", line))]
    assert len(asked) == 1 and first_ready < asked[0] <= queries[0][0]

    # the pod as the API showed it: the algorithm never ran before the service had started ...
    running = [p for p in pods.states if "waiting" not in statuses_of(p).get("algorithm", {}).get(
        "state", {"waiting": {}})]
    assert running, "the algorithm was never seen running or terminated"
    assert all(statuses_of(p)["service"]["started"] or "terminated" in statuses_of(p)["service"]["state"]
               for p in running)
    assert statuses_of(running[0])["service"]["started"] is True
    # ... the algorithm finished, then the pod was removed and the service with it
    final = statuses_of(pods.states[-1])  # the DELETED event's object
    algo_end = final["algorithm"]["state"]["terminated"]
    assert algo_end["exitCode"] == 0
    first = statuses_of(running[0])["service"]["state"]
    assert (first.get("running") or first["terminated"])["startedAt"] <= algo_end["startedAt"]
    # (the local kubelet may report the pod Succeeded before it stops the sidecar, and the node
    # removes the Job at once; any stop of the service that the API did show came after the end)
    for p in pods.states:
        svc_end = statuses_of(p).get("service", {}).get("state", {}).get("terminated")
        assert svc_end is None or svc_end["finishedAt"] >= algo_end["finishedAt"]
    assert alive and alive[0], "the service's process was not found while it ran"
    wait_for(lambda: not service_pids(port), 10, "the service's process to be gone")


def test_a_service_that_never_becomes_ready_fails_the_run_within_its_deadline(stack):
    port = free_port()
    task = stack.create_task(image="v6-demo/avg-service", input={"column": "Age"},
                             databases=["default"], nodes=["node-a"], deadline_seconds=60,
                             service=service(port, readiness={"http_path": "/no-such-path"},
                                             ready_timeout_seconds=3))
    [run] = stack.wait_task(task["id"], timeout=60)["runs"]
    logs = run["result"]["logs"]
    assert run["status"] == "failed", logs
    message = (f"companion service {SERVICE_IMAGE} did not become ready within 3s (startup probe "
               f"failed 3 times: HTTP GET /no-such-path on port {port})")
    assert run["history"][-1]["detail"] == message
    assert f"[node] failed: {message}" in logs
    # decided by the node from the probe, not by the run's deadline; the algorithm never ran
    assert "DeadlineExceeded" not in logs and "first request" not in logs
    assert "GET /no-such-path 404 kube-probe" in "\n".join(container_log(logs, "service"))
    wait_for(lambda: not service_pids(port), 10, "the service's process to be gone")


def test_an_algorithm_that_needs_a_service_and_has_none_fails_clearly(stack):
    task = stack.create_task(image="v6-demo/avg-service", input={"column": "Age"},
                             databases=["default"], nodes=["node-a"])
    [run] = stack.wait_task(task["id"])["runs"]
    assert run["status"] == "crashed"
    assert "avg_service: error: SERVICE_URL is not set" in run["result"]["logs"]
