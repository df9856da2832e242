"""The node reads a Job's events by field selector (events have no labels) over HTTP, from the
local cluster with the official client, and a refusal among them ends the run.

STAND-IN (replace once the admission work is merged): the local cluster cannot refuse a pod at
admission yet, so this test holds the pod back with ``suspend: true`` and creates the Job
controller's FailedCreate event itself through the events API, in the shape the real Job
controller records it (tests/node/fixtures/event-failedcreate-*.yaml). With admission in the
local cluster, create a Job whose pod Pod Security (hostPath) or a ResourceQuota refuses and let
the Job controller record the event instead.
"""
from __future__ import annotations

import pytest

from localcluster.testing import LocalCluster
from node.cluster import Cluster
from node.models import TaskStatus as S
from node.status import run_status
from tests.node.test_status import load

NS = "v6-jobs"


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster() as lc:
        api = lc.api_client()
        from kubernetes import client
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
        yield Cluster(api, NS, request_timeout=10)


def _job(name: str) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"suspend": True, "backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "v6-demo/avg"}]}}}}


def _event(name: str, involved: dict, fixture: str = "event-failedcreate-podsecurity") -> dict:
    event = load(fixture)
    event["metadata"] = {"name": name, "namespace": NS}
    event["involvedObject"] = {**event["involvedObject"], **involved}
    return event


def test_the_refusal_of_a_jobs_pod_is_found_by_field_selector_and_ends_the_run(cluster):
    job = cluster.create_job(_job("v6-run-42"))
    other = cluster.create_job(_job("v6-run-43"))
    meta = job["metadata"]
    refusal = _event("v6-run-42.1", {"name": "v6-run-42", "uid": meta["uid"],
                                     "resourceVersion": meta["resourceVersion"]})
    cluster.core.create_namespaced_event(NS, refusal)
    # neither another Job's refusal nor a pod's event of the same name is this Job's
    cluster.core.create_namespaced_event(NS, _event("v6-run-43.1", {
        "name": "v6-run-43", "uid": other["metadata"]["uid"]}, "event-failedcreate-quota"))
    cluster.core.create_namespaced_event(NS, _event("v6-run-42.2", {
        "kind": "Pod", "apiVersion": "v1", "name": "v6-run-42", "uid": meta["uid"]},
        "event-failedmount"))

    events = cluster.job_events("v6-run-42")
    assert [e["metadata"]["name"] for e in events] == ["v6-run-42.1"]
    assert events[0]["involvedObject"]["kind"] == "Job"

    state = run_status(cluster.get_job("v6-run-42"), [], events=events)
    assert (state.status, state.terminal, state.reason) == (S.START_FAILED, True, "FailedCreate")
    assert 'violates PodSecurity "baseline:latest"' in state.detail
    assert run_status(cluster.get_job("v6-run-43"), [], events=events).status == S.PENDING
