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


def test_provenance_names_what_ran_and_its_isolation(target):
    """Issue 16: the digest that ran and the policies' hash."""
    task = create(target, "v6-demo/avg", {"method": "avg", "column": "Age"})
    [r] = finished(target, task)
    assert r["status"] == "completed", (r, target.logs())
    p = r["result"]["provenance"]
    assert p["node_id"] == target.node_ids[0] and p["image"] == "v6-demo/avg"
    assert p["image_digest"] and p["image_digest"].startswith("sha256:"), p
    if target.name == "docker":  # the engine's own id of the image that ran
        assert p["image_digest"] == docker_image_id("v6-demo/avg")
    assert p["job_spec_sha256"] and p["network_policies_sha256"], p
    assert any(pol["name"].startswith("v6-") for pol in p["network_policies"]), p
    assert p["exit_code"] == 0
    isolation = p["isolation"]
    if pods_isolated(target):  # the sidecar probed from inside the pod, and every check held
        assert isolation["outcome"] == "passed", (isolation, target.logs())
        names = [c["name"] for c in isolation["checks"]]
        assert names[0] == "proxy" and names[-1] == "dns", names
        # at least the API server (KUBERNETES_SERVICE_HOST); the server too, unless on loopback
        assert any(n.startswith("blocked ") for n in names), names
        assert all(c["ok"] and c["detail"] for c in isolation["checks"]), isolation
    else:  # pods on the host's network: no probe, and said so, never "passed"
        assert isolation["outcome"] == "not run" and isolation["detail"], isolation
    usage = p["usage"]
    if usage["available"]:  # the pod's cgroup was visible to the sidecar
        assert usage["scope"] == "pod" and usage["cpu_seconds"] > 0, usage
    else:
        assert usage["reason"], usage


def pods_isolated(target) -> bool:
    """Algorithm pods have a network of their own (else the stand-in runs them on the host's)."""
    if target.network_isolation:
        return True
    return target.name == "local" and target.stack.network.get("mode") == "isolated"


def docker_image_id(ref: str) -> str:
    from localcluster.runtime.docker_client import SyncDocker, q
    return SyncDocker().request("GET", f"/images/{q(ref)}/json")["Id"]


def docker_build(tag: str, revision: str) -> str:
    """A new image under `tag`: v6-demo/avg with one label more (a new id, no new layer)."""
    import subprocess
    done = subprocess.run(["docker", "build", "-q", "-t", tag, "-"], text=True,
                          input=f"FROM v6-demo/avg\nLABEL v6.test.revision={revision}\n",
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return docker_image_id(tag)


# The node is restarted twice (pin on, then off again): new processes, handed to the target.
@pytest.mark.allow_leftovers
def test_pin_on_first_use_refuses_a_rebuilt_tag(target):
    if target.name != "docker":
        pytest.skip("needs images built here (docker mode): a tag rebuilt to new content")
    import subprocess

    import yaml
    tag = "v6-demo/pin-check:1"
    original = target.core.read_namespaced_config_map("v6-node-config", "v6-node").data["node.yaml"]
    config = yaml.safe_load(original)
    config["images"]["digest"] = "pin"
    try:
        first = docker_build(tag, "1")
        target.core.patch_namespaced_config_map("v6-node-config", "v6-node",
                                                {"data": {"node.yaml": yaml.safe_dump(config)}})
        target.restart_node(target.node_ids[0])
        [r] = finished(target, create(target, tag, {"method": "avg", "column": "Age"}))
        assert r["status"] == "completed", (r, target.logs())
        assert r["result"]["provenance"]["pin"] == first == r["result"]["provenance"]["image_digest"]

        second = docker_build(tag, "2")
        assert second != first
        [r] = finished(target, create(target, tag, {"method": "avg", "column": "Age"}))
        assert r["status"] == "not allowed", (r, target.logs())
        assert first in r["result"]["logs"] and second in r["result"]["logs"], r["result"]["logs"]
        assert r["result"]["data"] == ""
    finally:
        target.core.patch_namespaced_config_map("v6-node-config", "v6-node",
                                                {"data": {"node.yaml": original}})
        target.restart_node(target.node_ids[0])
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=60)
