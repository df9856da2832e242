"""A run whose pod no node can take: the scheduler's reason goes upstream while the run waits,
and the run fails once the node's unschedulable grace has passed."""
from __future__ import annotations

import time

from localcluster.stack import wait_for
from tests.integration.support import node_spec, pytestmark  # noqa: F401  (marks this module)

GRACE = 4
MESSAGE = ("0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are "
           "available: 1 No preemption victims found for incoming pod.")


def test_a_gpu_run_on_a_cluster_without_gpus_waits_with_the_reason_then_fails(stack_factory):
    # the local cluster's one node has no nvidia.com/gpu (serve --gpus 0, the default)
    stack = stack_factory([node_spec("node-a", job={"unschedulable_grace_seconds": GRACE})])
    task = stack.create_task(image="v6-demo/avg", input={"method": "avg", "column": "Age"},
                             databases=["default"], nodes=["node-a"], resources={"gpu": 1})
    run_id = task["runs"][0]["id"]

    def waiting():
        run = stack.api("GET", f"/api/run/{run_id}").json()
        return next((h for h in run["history"] if h["status"] == "pending"
                     and "Unschedulable" in (h.get("detail") or "")), None)
    entry = wait_for(waiting, 30, "the run reported as pending, unschedulable")
    seen = time.monotonic()
    assert MESSAGE in entry["detail"]
    run = stack.api("GET", f"/api/run/{run_id}").json()
    assert run["status"] == "pending" and not run.get("result")

    run = stack.wait_task(task["id"], timeout=GRACE + 30)["runs"][0]
    # the grace counts from the condition's lastTransitionTime (whole seconds)
    assert time.monotonic() - seen >= GRACE - 1.5
    assert run["status"] == "start failed"
    assert MESSAGE in run["result"]["logs"]
    assert [h["status"] for h in run["history"]][-2:] == ["pending", "start failed"]
