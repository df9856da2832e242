"""End-to-end scenarios, the same against every target (tests/e2e/targets.py): a researcher's task
goes through the server to a node, runs as a Job, and the result comes back."""
from __future__ import annotations

import json

import pytest

from localcluster.stack import wait_for
from tests.e2e.targets import Target, column_values

pytestmark = pytest.mark.integration

# Checks of algorithms/diagnostics that must hold on every target (mounts, user, root fs, token).
LOCAL_CHECKS = ("env_present", "input_readable", "input_read_only", "output_writable", "tmp_writable",
                "token_present", "non_root", "root_fs_read_only", "no_service_account_token",
                "proxy_api_version")


def create(target: Target, image: str, input: dict, databases=("default",), nodes=None) -> dict:
    body = {"image": image, "input": input, "databases": list(databases),
            "nodes": list(nodes or target.node_ids[:1])}
    resp = target.api("POST", "/api/task", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def run(target: Target, run_id: int) -> dict:
    return target.api("GET", f"/api/run/{run_id}").json()


def finished(target: Target, task: dict, timeout: float = 120) -> list[dict]:
    def done():
        runs = [run(target, r["id"]) for r in task["runs"]]
        return runs if all(r.get("result") for r in runs) else None
    return wait_for(done, timeout, f"task {task['id']} to finish", interval=0.25)


def statuses(r: dict) -> list[str]:
    return [h["status"] for h in r["history"]]


def wait_active(target: Target, run_id: int, timeout: float = 90) -> None:
    wait_for(lambda: "active" in statuses(run(target, run_id)), timeout, f"run {run_id} to be active",
             interval=0.25)


def test_avg(target):
    task = create(target, "v6-demo/avg", {"method": "avg", "column": "Age"})
    [r] = finished(target, task)
    assert r["status"] == "completed", (r, target.logs())
    values = column_values(target.data[target.node_ids[0]], "Age")
    result = json.loads(r["result"]["data"])
    assert result["mean"] == pytest.approx(sum(values) / len(values))
    assert result["count"] == len(values)


def test_federated_avg(target):
    """`central` makes a `partial` subtask for the task's nodes through the proxy (the server lets
    a subtask target only its parent's nodes, so the task goes to every node and each central run
    computes the same federated mean)."""
    task = create(target, "v6-demo/avg", {"method": "central", "column": "Age", "timeout": 120},
                  nodes=target.node_ids)
    runs = finished(target, task, timeout=180)
    values = [v for n in target.node_ids for v in column_values(target.data[n], "Age")]
    for r in runs:
        assert r["status"] == "completed", (r, target.logs())
        result = json.loads(r["result"]["data"])
        assert result["mean"] == pytest.approx(sum(values) / len(values))
        assert result["count"] == len(values)
        assert result["nodes"] == len(target.node_ids)  # how many partial results


def test_diagnostics(target):
    task_input = target.diagnostics_input()
    task = create(target, "v6-demo/diagnostics", task_input)
    [r] = finished(target, task)
    assert r["status"] == "completed", (r, target.logs())
    report = {c["name"]: c for c in json.loads(r["result"]["data"])}
    for name in LOCAL_CHECKS:
        assert report[name]["ok"] is True, report[name]
    if task_input["probes"].get("dns_system"):
        # no resolver answers the DNS-exfiltration probe (and the proxy answered: LOCAL_CHECKS)
        assert report["dns_exfiltration"]["ok"] is True, report
        assert report["dns_exfiltration"]["detail"].startswith("no reachable resolver")
    isolation = {n: c for n, c in report.items() if n.startswith(("isolation.kubernetes_api:", "isolation.node:"))}
    assert isolation, report
    if target.network_isolation:
        # the proxy answered (LOCAL_CHECKS); every other target is refused or times out (DNS
        # names may stay undecided: a name the pod may not reach need not resolve)
        isolation = {n: c for n, c in report.items()
                     if n.startswith("isolation.") and not n.startswith("isolation.dns_names")}
    for name, check in isolation.items():
        if target.network_isolation:
            assert check["ok"] is True, check
        else:
            # Pods on the host network: the probe runs and decides, whatever it finds.
            assert check["ok"] in (True, False), check


def test_kill(target):
    long = target.long_task(60)
    task = create(target, long.image, long.input, databases=long.databases)
    run_id = task["runs"][0]["id"]
    wait_active(target, run_id)
    resp = target.api("POST", f"/api/task/{task['id']}/kill")
    assert resp.status_code == 200, resp.text
    assert resp.json()["nodes"][target.node_ids[0]]["killed"] == [run_id]
    [r] = finished(target, task, timeout=60)
    assert r["status"] == "killed by user"


# The restarted node is a new process, handed to the module's target.
@pytest.mark.allow_leftovers
def test_node_restart_keeps_the_run(target):
    """A node restarted while its run is active finds the Job again and reports the result."""
    long = target.long_task(5)
    task = create(target, long.image, long.input, databases=long.databases)
    run_id = task["runs"][0]["id"]
    wait_active(target, run_id)
    target.restart_node(target.node_ids[0])
    [r] = finished(target, task, timeout=120)
    assert r["status"] == "completed", (r, target.logs())
    assert statuses(r).count("completed") == 1
