"""A run whose pod the cluster refuses at admission (Pod Security, a quota, a missing
RuntimeClass) ends within seconds, not at the Job's deadline, with the refusal's text in its
result: the local cluster's admission refuses the pod, its Job controller records FailedCreate on
the Job, the node reads the Job's events."""
from __future__ import annotations

import time

import pytest
from kubernetes import client, config

from localcluster.stack import JOBS_NAMESPACE, wait_for
from tests.integration.support import node_spec, pytestmark  # noqa: F401  (marks this module)

INPUT = {"method": "avg", "column": "Age"}
WITHIN = 10  # seconds from the task's creation to the failed run, the bound


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from tests.integration.support import make_stack
    stack = make_stack(tmp_path_factory.mktemp("admission"), [
        node_spec("node-a"),
        node_spec("node-b", job={"runtime_class_name": "gvisor"})])
    yield stack
    stack.close()


@pytest.fixture
def core(stack):
    return client.CoreV1Api(config.new_client_from_config(config_file=str(stack.kubeconfig)))


def _refused_run(stack, node: str) -> tuple[dict, float]:
    began = time.monotonic()
    task = stack.create_task(image="v6-demo/avg", input=INPUT, databases=["default"], nodes=[node])
    run = stack.wait_task(task["id"], timeout=WITHIN + 20)["runs"][0]
    return run, time.monotonic() - began


def test_a_pod_refused_by_pod_security_ends_the_run_with_the_refusal(stack, core):
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    core.patch_namespace(JOBS_NAMESPACE, {"metadata": {"labels": labels}})
    try:
        run, took = _refused_run(stack, "node-a")
    finally:
        core.patch_namespace(JOBS_NAMESPACE, {"metadata": {"labels": {
            "pod-security.kubernetes.io/enforce": None}}})
    assert run["status"] == "start failed"
    assert took < WITHIN, took
    logs = run["result"]["logs"]
    assert "the cluster refused to create the pod" in logs
    assert 'violates PodSecurity "restricted:latest"' in logs
    # the node's pods meet every restricted control but the volume type of their hostPath
    # mounts (task dir, output, tmp, database), so that is all the refusal names
    assert logs.rstrip().endswith('violates PodSecurity "restricted:latest": restricted volume '
                                  'types (volumes "task", "output", "tmp", "db-0" use restricted '
                                  'volume type "hostPath")'), logs


def test_a_pod_over_quota_ends_the_run_with_the_quota_text(stack, core):
    core.create_namespaced_resource_quota(JOBS_NAMESPACE, {"metadata": {"name": "no-pods"},
                                                           "spec": {"hard": {"pods": "0"}}})
    try:
        wait_for(lambda: (core.read_namespaced_resource_quota("no-pods", JOBS_NAMESPACE).status
                          or client.V1ResourceQuotaStatus()).hard, 10, "the quota in force")
        run, took = _refused_run(stack, "node-a")
    finally:
        core.delete_namespaced_resource_quota("no-pods", JOBS_NAMESPACE)
    assert run["status"] == "start failed"
    assert took < WITHIN, took
    assert "exceeded quota: no-pods, requested: pods=1, used: pods=0, limited: pods=0" \
        in run["result"]["logs"]


def test_a_missing_runtime_class_ends_the_run_naming_it(stack):
    run, took = _refused_run(stack, "node-b")
    assert run["status"] == "start failed"
    assert took < WITHIN, took
    assert 'pod rejected: RuntimeClass "gvisor" not found' in run["result"]["logs"]


def test_after_the_refusals_runs_succeed_again(stack):
    task = stack.create_task(image="v6-demo/avg", input=INPUT, databases=["default"],
                             nodes=["node-a"])
    run = stack.wait_task(task["id"], timeout=60)["runs"][0]
    assert run["status"] == "completed", run
