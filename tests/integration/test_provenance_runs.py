"""Provenance end to end on the local cluster: what a Result says ran is what the API server
held (the Job's spec, the NetworkPolicies selecting the pod, the kubelet's imageID), and the
emitter prints it."""
from __future__ import annotations

import json
import subprocess
import sys

from localcluster.stack import wait_for
from node.provenance import canonical_hash, image_digest
from tests.integration.support import pytestmark  # noqa: F401  (marks this module)


def api_objects(stack, run_id: int) -> tuple[dict, list[dict], str]:
    """While the run is active: its Job, the jobs namespace's policies, the container's imageID
    (as `kubectl get -o json` would give them)."""
    from kubernetes import client, config
    api = config.new_client_from_config(config_file=str(stack.kubeconfig))
    try:
        def read(call):
            resp = call(_preload_content=False)
            return json.loads(resp.data)
        job = read(lambda **kw: client.BatchV1Api(api).read_namespaced_job(
            f"v6-run-{run_id}-node-a", "v6-jobs", **kw))
        policies = read(lambda **kw: client.NetworkingV1Api(api).list_namespaced_network_policy(
            "v6-jobs", **kw))["items"]

        def image_id():
            pods = read(lambda **kw: client.CoreV1Api(api).list_namespaced_pod(
                "v6-jobs", label_selector=f"v6.run-id={run_id}", **kw))["items"]
            for pod in pods:
                for cs in pod["status"].get("containerStatuses") or []:
                    if cs["name"] == "algorithm" and cs.get("imageID"):
                        return cs["imageID"]
            return None
        return job, policies, wait_for(image_id, 30, "the algorithm container's imageID")
    finally:
        api.close()


def test_the_result_names_the_job_policies_and_image_that_ran(shared_stack):
    task = shared_stack.create_task(image="test/sleeper", input={"seconds": 3}, databases=[],
                                    nodes=["node-a"])
    run_id = task["runs"][0]["id"]
    wait_for(lambda: "active" in [h["status"] for h in shared_stack.api(
        "GET", f"/api/run/{run_id}").json()["history"]], 30, "the run to be active")
    job, policies, image_id = api_objects(shared_stack, run_id)
    run = shared_stack.wait_task(task["id"])["runs"][0]
    assert run["status"] == "completed", run
    p = run["result"]["provenance"]
    assert p["node_id"] == "node-a", p
    assert p["image"] == "test/sleeper", p
    assert p["image_id"] == image_id and p["image_digest"] == image_digest(image_id), p
    assert p["image_digest"].startswith("sha256:")
    assert p["job_spec_sha256"] == canonical_hash(job["spec"])
    ours = next(pol for pol in policies if pol["metadata"]["name"].startswith("v6-"))
    named = {r["name"]: r["sha256"] for r in p["network_policies"]}
    assert named[ours["metadata"]["name"]] == canonical_hash(ours["spec"])
    assert p["network_policies_sha256"]
    assert p["exit_code"] == 0 and p["started_at"] and p["finished_at"]
    isolation = p["isolation"]
    if shared_stack.network.get("mode") == "isolated":  # the pod's own netns: probed, and held
        assert isolation["outcome"] == "passed", isolation
        assert [c["name"] for c in isolation["checks"]][::len(isolation["checks"]) - 1] == \
            ["proxy", "dns"], isolation
    else:  # the host's network: the stack turns the probe off, and the run says so
        assert isolation == {"outcome": "not run", "checks": [],
                             "detail": "turned off (live.isolation_probe: false)"}, isolation

    # the emitter prints it
    out = subprocess.run(
        [sys.executable, "-m", "dummy_server.command_emitter", "--server", shared_stack.server_url,
         "--key", shared_stack.researcher_key, "status", str(task["id"]), "--format", "table"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"run {run_id} provenance" in out.stdout
    assert p["image_digest"] in out.stdout and p["network_policies_sha256"] in out.stdout
    assert f"isolation      {isolation['outcome']}" in out.stdout
