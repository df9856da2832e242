"""The node keeps slim copies of API objects: they must decide every status exactly as the full
objects do, and keep what recovery and log collection read."""
from __future__ import annotations

import pytest

from node.cluster import WatchEvent
from node.manifests import recovery_info
from node.objects import slim, slim_item
from node.status import run_status
from tests.node.test_status import SCENARIOS, load


@pytest.mark.parametrize("job,pods,events", [(j, p, e) for j, p, e, *_ in SCENARIOS],
                         ids=[f"{j}+{'+'.join(p) or 'nopods'}" for j, p, *_ in SCENARIOS])
def test_slim_objects_map_to_the_same_status(job, pods, events):
    full_job = load(job) if job else None
    full_pods = [load(p) for p in pods]
    evts = [load(e) for e in events]
    assert run_status(slim(full_job) if full_job else None, [slim(p) for p in full_pods],
                      events=evts) == run_status(full_job, full_pods, events=evts)


def test_slim_pod_keeps_container_names_and_drops_the_rest_of_the_spec():
    pod = load("pod-running")
    pod["metadata"]["managedFields"] = [{"manager": "kubelet"}]
    small = slim(pod)
    assert small["spec"] == {"initContainers": [],
                             "containers": [{"name": c["name"]} for c in pod["spec"]["containers"]]}
    assert small["status"] == pod["status"]
    assert "managedFields" not in small["metadata"]
    assert small["metadata"]["labels"] == pod["metadata"]["labels"]


def test_slim_job_keeps_what_recovery_reads():
    job = load("job-active")
    assert recovery_info(slim(job)) == recovery_info(job)
    assert "spec" not in slim(job)


def test_slim_item_slims_syncs_and_events_and_passes_others():
    pod = load("pod-running")
    sync = slim_item(("sync", "pods", [pod]))
    assert sync == ("sync", "pods", [slim(pod)])
    event = slim_item(("event", "pods", WatchEvent("MODIFIED", pod)))
    assert event == ("event", "pods", WatchEvent("MODIFIED", slim(pod)))
    assert slim_item(("command", {"x": 1})) == ("command", {"x": 1})
