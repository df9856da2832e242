"""DELETE through the official client: propagation policies with a Job and a pod it owns
(made by hand; the Job is suspended so no controller adds pods), graceful pod deletion,
finalizers, preconditions and namespace deletion."""
from __future__ import annotations

import pytest
from kubernetes.client import ApiException

from localcluster.testing import wait_until

pytestmark = pytest.mark.integration


def make_job_and_pod(core, batch, namespace, block=True):
    job = batch.create_namespaced_job(namespace, {
        "metadata": {"name": "j"},
        "spec": {"suspend": True, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})
    pod = core.create_namespaced_pod(namespace, {
        "metadata": {"name": "p", "ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": job.metadata.uid,
            "controller": True, "blockOwnerDeletion": block}]},
        "spec": {"nodeName": "elsewhere",  # bound to a node no kubelet serves here
                 "containers": [{"name": "c", "image": "busybox"}]}})
    return job, pod


def gone(read, *args):
    try:
        read(*args)
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


def terminating_or_gone(core, namespace, name):
    try:
        return core.read_namespaced_pod(name, namespace).metadata.deletion_timestamp is not None
    except ApiException as e:
        return e.status == 404


def test_background_removes_owner_then_dependents(api, namespace):
    core, batch, _ = api
    make_job_and_pod(core, batch, namespace)
    batch.delete_namespaced_job("j", namespace, propagation_policy="Background")
    assert gone(batch.read_namespaced_job, "j", namespace)
    wait_until(lambda: terminating_or_gone(core, namespace, "p"), what="pod deletion")
    core.delete_namespaced_pod("p", namespace, grace_period_seconds=0)  # as the kubelet does
    assert gone(core.read_namespaced_pod, "p", namespace)


def test_foreground_keeps_owner_until_blocking_dependents_are_gone(api, namespace):
    core, batch, _ = api
    make_job_and_pod(core, batch, namespace)
    batch.delete_namespaced_job("j", namespace, propagation_policy="Foreground")
    job = batch.read_namespaced_job("j", namespace)
    assert job.metadata.deletion_timestamp is not None
    assert "foregroundDeletion" in job.metadata.finalizers
    pod = core.read_namespaced_pod("p", namespace)
    assert pod.metadata.deletion_timestamp is not None  # graceful: waiting for its kubelet
    core.delete_namespaced_pod("p", namespace, grace_period_seconds=0)
    assert gone(batch.read_namespaced_job, "j", namespace)


def test_jobs_default_to_orphan(api, namespace):
    core, batch, _ = api
    make_job_and_pod(core, batch, namespace)
    batch.delete_namespaced_job("j", namespace)
    assert gone(batch.read_namespaced_job, "j", namespace)
    pod = core.read_namespaced_pod("p", namespace)
    assert pod.metadata.owner_references is None and pod.metadata.deletion_timestamp is None


def test_graceful_pod_deletion(api, namespace):
    core, _, _ = api
    core.create_namespaced_pod(namespace, {"metadata": {"name": "p"}, "spec": {
        "nodeName": "elsewhere", "terminationGracePeriodSeconds": 15,
        "containers": [{"name": "c", "image": "busybox"}]}})
    out = core.delete_namespaced_pod("p", namespace)
    assert out.metadata.deletion_grace_period_seconds == 15
    assert core.read_namespaced_pod("p", namespace).metadata.deletion_timestamp is not None
    core.delete_namespaced_pod("p", namespace, grace_period_seconds=0)
    assert gone(core.read_namespaced_pod, "p", namespace)


def test_finalizers_and_preconditions(api, namespace):
    core, _, _ = api
    cm = core.create_namespaced_config_map(namespace, {
        "metadata": {"name": "a", "finalizers": ["example.com/hold"]}})
    with pytest.raises(ApiException) as e:
        core.delete_namespaced_config_map("a", namespace, body={"preconditions": {"uid": "not-it"}})
    assert e.value.status == 409
    core.delete_namespaced_config_map("a", namespace,
                                      body={"preconditions": {"uid": cm.metadata.uid}})
    held = core.read_namespaced_config_map("a", namespace)
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("a", namespace, {"metadata": {"finalizers": None}})
    assert gone(core.read_namespaced_config_map, "a", namespace)


def test_delete_missing_is_404(api, namespace):
    core, _, _ = api
    with pytest.raises(ApiException) as e:
        core.delete_namespaced_secret("nope", namespace)
    assert e.value.status == 404


def test_delete_collection(api, namespace):
    core, _, _ = api
    for name, app in (("a", "x"), ("b", "x"), ("c", "y")):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name,
                                                                   "labels": {"app": app}}})
    core.delete_collection_namespaced_config_map(namespace, label_selector="app=x")
    assert [c.metadata.name for c in core.list_namespaced_config_map(namespace).items] == ["c"]


def test_namespace_deletion_removes_everything(api):
    core, _, _ = api
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_config_map("doomed", {"metadata": {"name": "a"}})
    core.delete_namespace("doomed")
    wait_until(lambda: gone(core.read_namespace, "doomed"), what="namespace removal")
    assert core.list_config_map_for_all_namespaces(
        field_selector="metadata.namespace=doomed").items == []
