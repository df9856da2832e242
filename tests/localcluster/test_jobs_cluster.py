"""Jobs behind a served local cluster, through the official Kubernetes client."""
from __future__ import annotations

import uuid

import kubernetes
import pytest

from localcluster.testing import wait_until

from .kubelet_fixtures import kcluster  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def apis(kcluster):  # noqa: F811
    client = kcluster.api_client()
    return kubernetes.client.CoreV1Api(client), kubernetes.client.BatchV1Api(client)


@pytest.fixture
def ns(apis):
    name = "j-" + uuid.uuid4().hex[:8]
    apis[0].create_namespace({"metadata": {"name": name}})
    return name


def _job(name, args, **spec):
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {
                "restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "main", "image": "test/sh", "args": args}]}}, **spec}}


def _finished(batch, ns, name):
    status = batch.read_namespaced_job_status(name, ns).status
    for c in status.conditions or []:
        if c.type in ("Complete", "Failed") and c.status == "True":
            return c
    return None


def test_job_success_is_complete_and_its_pod_log_readable(apis, ns):
    core, batch = apis
    batch.create_namespaced_job(ns, _job("ok", ["echo result"]))
    cond = wait_until(lambda: _finished(batch, ns, "ok"), 20, "job finished")
    status = batch.read_namespaced_job_status("ok", ns).status
    assert cond.type == "Complete" and status.succeeded == 1 and status.completion_time
    pods = core.list_namespaced_pod(ns, label_selector="job-name=ok").items
    assert len(pods) == 1
    assert core.read_namespaced_pod_log(pods[0].metadata.name, ns) == "result\n"


def test_failing_job_hits_the_backoff_limit(apis, ns):
    _, batch = apis
    batch.create_namespaced_job(ns, _job("bad", ["exit 2"], backoffLimit=1))
    cond = wait_until(lambda: _finished(batch, ns, "bad"), 20, "job finished")
    assert (cond.type, cond.reason) == ("Failed", "BackoffLimitExceeded")
    assert batch.read_namespaced_job_status("bad", ns).status.failed == 2


def test_active_deadline_exceeded(apis, ns):
    _, batch = apis
    batch.create_namespaced_job(ns, _job("slow", ["sleep 60"], activeDeadlineSeconds=1))
    cond = wait_until(lambda: _finished(batch, ns, "slow"), 20, "job finished")
    assert (cond.type, cond.reason) == ("Failed", "DeadlineExceeded")
    assert cond.message == "Job was active longer than specified deadline"


def test_ttl_after_finished_deletes_the_job(apis, ns):
    _, batch = apis
    batch.create_namespaced_job(ns, _job("ttl", ["true"], ttlSecondsAfterFinished=1))

    def gone():
        return not batch.list_namespaced_job(ns, field_selector="metadata.name=ttl").items
    wait_until(gone, 20, "job deleted by its TTL")
