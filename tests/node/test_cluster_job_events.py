"""The node reads a Job's events by field selector (events have no labels) over HTTP, from the
local cluster with the official client, and a refusal among them ends the run.

The refusals are real: the namespace enforces Pod Security "restricted" (or holds a quota of no
pods), the local cluster's admission refuses the Job's pod and its Job controller records the
FailedCreate event, as a real cluster's does.
"""
from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from localcluster.testing import LocalCluster, wait_until
from node.cluster import Cluster
from node.models import TaskStatus as S
from node.status import run_status



@pytest.fixture(scope="module")
def api():
    with LocalCluster() as lc:
        yield lc.api_client()


def _namespace(api, labels: dict | None = None) -> str:
    name = "jobs-" + uuid.uuid4().hex[:8]
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    return name


def _job(name: str, **pod_spec) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", **pod_spec,
                "containers": [{"name": "c", "image": "v6-demo/avg"}]}}}}


def _refusal(cluster: Cluster, job: str) -> list[dict]:
    return wait_until(lambda: [e for e in cluster.job_events(job) if e["reason"] == "FailedCreate"],
                      timeout=15, what=f"a FailedCreate event of {job}")


def test_a_pod_security_refusal_is_found_by_field_selector_and_ends_the_run(api):
    ns = _namespace(api, {"pod-security.kubernetes.io/enforce": "restricted"})
    cluster = Cluster(api, ns, request_timeout=10)
    cluster.create_job(_job("v6-run-42", volumes=[{"name": "data", "hostPath": {"path": "/tmp"}}]))
    cluster.create_job(_job("v6-run-43"))  # also refused (not restricted), but not this run's
    events = _refusal(cluster, "v6-run-42")
    assert {e["involvedObject"]["name"] for e in events} == {"v6-run-42"}
    assert events[0]["involvedObject"]["kind"] == "Job"
    assert client.CoreV1Api(api).list_namespaced_pod(ns).items == []

    state = run_status(cluster.get_job("v6-run-42"), [], events=events)
    assert (state.status, state.terminal, state.reason) == (S.START_FAILED, True, "FailedCreate")
    assert 'violates PodSecurity "restricted:latest"' in state.detail
    assert 'restricted volume types (volume "data" uses restricted volume type "hostPath")' \
        in state.detail
    # another Job's refusal does not end this run
    assert run_status(cluster.get_job("v6-run-43"), [], events=events).status == S.PENDING


def test_a_quota_refusal_ends_the_run_with_the_quota_text(api):
    ns = _namespace(api)
    core = client.CoreV1Api(api)
    core.create_namespaced_resource_quota(ns, {"metadata": {"name": "none"},
                                               "spec": {"hard": {"pods": "0"}}})
    wait_until(lambda: (core.read_namespaced_resource_quota("none", ns).status or
                        client.V1ResourceQuotaStatus()).hard, timeout=10, what="the quota's status")
    cluster = Cluster(api, ns, request_timeout=10)
    cluster.create_job(_job("v6-run-7"))
    state = run_status(cluster.get_job("v6-run-7"), [], events=_refusal(cluster, "v6-run-7"))
    assert (state.status, state.terminal) == (S.START_FAILED, True)
    assert "exceeded quota: none" in state.detail
