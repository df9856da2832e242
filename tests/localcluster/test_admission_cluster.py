"""Admission behind a served local cluster, through the official Kubernetes client: Pod
Security (enforce refuses with the real 403, warn answers Warning headers), ResourceQuota (its
status kept by the cluster, refusals with the real texts, terminal pods not counted),
RuntimeClass, and the Job controller's FailedCreate events and retries."""
from __future__ import annotations

import json
import uuid

import kubernetes
import pytest
from kubernetes.client.rest import ApiException

from localcluster.testing import LocalCluster, wait_until

from .kubelet_fixtures import TEST_IMAGES

pytestmark = pytest.mark.integration

ENFORCE = "pod-security.kubernetes.io/enforce"
RESTRICTED_MAIN = ('allowPrivilegeEscalation != false (container "main" must set securityContext.'
                   'allowPrivilegeEscalation=false), unrestricted capabilities (container "main" must set '
                   'securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "main" '
                   'must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "main" must '
                   'set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')


@pytest.fixture(scope="module")
def cluster():
    # a short first retry delay, so a Job's refused pods are retried within the test
    with LocalCluster(images=[TEST_IMAGES], extra_args=["--job-api-backoff", "0.05"]) as lc:
        yield lc


@pytest.fixture
def apis(cluster):
    client = cluster.api_client()
    return (kubernetes.client.CoreV1Api(client), kubernetes.client.BatchV1Api(client),
            kubernetes.client.NodeV1Api(client))


def _ns(core, labels=None) -> str:
    name = "a-" + uuid.uuid4().hex[:8]
    core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    return name


def _pod(name, args=("exit 0",), **container):
    return {"metadata": {"name": name}, "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                                                 "containers": [{"name": "main", "image": "test/sh",
                                                                 "args": list(args), **container}]}}


def _job(name, **spec):
    return {"metadata": {"name": name}, "spec": {"backoffLimit": 0, **spec, "template": {"spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
        "containers": [{"name": "main", "image": "test/sh", "args": ["exit 0"]}]}}}}


def _status(e: ApiException) -> dict:
    return json.loads(e.body)


def _refused(fn, *args) -> dict:
    with pytest.raises(ApiException) as e:
        fn(*args)
    return {"code": e.value.status, **_status(e.value)}


def _warnings(headers) -> list[str]:
    return [v for k, v in headers.items() if k.lower() == "warning"] if headers else []


# --------------------------------------------------------------------------- Pod Security
def test_enforce_refuses_a_pod_with_the_real_message(apis):
    core = apis[0]
    ns = _ns(core, {ENFORCE: "restricted"})
    status = _refused(core.create_namespaced_pod, ns, _pod("p"))
    assert status["code"] == 403 and status["reason"] == "Forbidden"
    assert status["message"] == f'pods "p" is forbidden: violates PodSecurity "restricted:latest": {RESTRICTED_MAIN}'
    assert status["details"] == {"name": "p", "kind": "pods"}
    assert core.list_namespaced_pod(ns).items == []


def test_warn_answers_warning_headers_on_pods_and_jobs(apis):
    core, batch, _ = apis
    ns = _ns(core, {"pod-security.kubernetes.io/warn": "restricted",
                    "pod-security.kubernetes.io/warn-version": "v1.30"})
    _, code, headers = core.create_namespaced_pod_with_http_info(ns, _pod("p"))
    assert code == 201
    expected = '299 - "would violate PodSecurity \\"restricted:v1.30\\": ' + RESTRICTED_MAIN.replace('"', '\\"') + '"'
    assert _warnings(headers) == [expected]
    _, code, headers = batch.create_namespaced_job_with_http_info(ns, _job("j"))
    assert code == 201 and _warnings(headers) == [expected]
    # a namespace without labels warns about nothing
    plain = _ns(core)
    _, _, headers = core.create_namespaced_pod_with_http_info(plain, _pod("p"))
    assert _warnings(headers) == []


def test_invalid_pod_security_labels_are_refused(apis):
    core = apis[0]
    status = _refused(core.create_namespace, {"metadata": {"name": "a-" + uuid.uuid4().hex[:8],
                                                            "labels": {ENFORCE: "strict"}}})
    assert status["code"] == 422 and status["reason"] == "Invalid"
    assert status["message"].endswith(f'is invalid: metadata.labels[{ENFORCE}]: Invalid value: "strict": '
                                      "must be one of privileged, baseline, restricted")
    ns = _ns(core)
    status = _refused(core.patch_namespace, ns, {"metadata": {"labels": {f"{ENFORCE}-version": "1.30"}}})
    assert status["code"] == 422 and 'must be "latest" or of the form "v1.x"' in status["message"]


# --------------------------------------------------------------------------- RuntimeClass
def test_a_pod_naming_a_missing_runtime_class_is_refused(apis):
    core, _, node = apis
    ns = _ns(core)
    status = _refused(core.create_namespaced_pod, ns,
                      {**_pod("gpu"), "spec": {**_pod("gpu")["spec"], "runtimeClassName": "nvidia"}})
    assert status["code"] == 403
    assert status["message"] == 'pods "gpu" is forbidden: pod rejected: RuntimeClass "nvidia" not found'
    name = "rc-" + uuid.uuid4().hex[:6]
    node.create_runtime_class({"metadata": {"name": name}, "handler": "runc",
                               "overhead": {"podFixed": {"cpu": "100m"}}})
    assert name in [rc.metadata.name for rc in node.list_runtime_class().items]
    pod = core.create_namespaced_pod(ns, {**_pod("ok"), "spec": {**_pod("ok")["spec"], "runtimeClassName": name}})
    assert pod.spec.overhead == {"cpu": "100m"}  # the admission gives the pod its overhead


# --------------------------------------------------------------------------- ResourceQuota
def _quota(core, ns, hard, name="q"):
    core.create_namespaced_resource_quota(ns, {"metadata": {"name": name}, "spec": {"hard": hard}})
    # the cluster's quota controller fills in the status; until then the quota takes no part
    return wait_until(lambda: core.read_namespaced_resource_quota(name, ns).status.hard,
                      what="quota status.hard")


def test_quota_refuses_with_the_real_texts_and_keeps_its_status(apis):
    core = apis[0]
    ns = _ns(core)
    assert _quota(core, ns, {"requests.cpu": "1", "pods": "3"}) == {"requests.cpu": "1", "pods": "3"}
    status = _refused(core.create_namespaced_pod, ns, _pod("bare"))
    assert status["code"] == 403
    assert status["message"] == 'pods "bare" is forbidden: failed quota: q: must specify requests.cpu for: main'
    big = _pod("big", resources={"requests": {"cpu": "2"}})
    assert _refused(core.create_namespaced_pod, ns, big)["message"] == (
        'pods "big" is forbidden: exceeded quota: q, requested: requests.cpu=2, used: requests.cpu=0, '
        "limited: requests.cpu=1")
    core.create_namespaced_pod(ns, _pod("half", args=["sleep 30"], resources={"requests": {"cpu": "500m"}}))
    wait_until(lambda: core.read_namespaced_resource_quota("q", ns).status.used ==
               {"requests.cpu": "500m", "pods": "1"}, what="quota status.used")
    more = _pod("more", resources={"requests": {"cpu": "600m"}})
    assert _refused(core.create_namespaced_pod, ns, more)["message"] == (
        'pods "more" is forbidden: exceeded quota: q, requested: requests.cpu=600m, used: requests.cpu=500m, '
        "limited: requests.cpu=1")


def test_terminal_pods_do_not_count(apis):
    core = apis[0]
    ns = _ns(core)
    _quota(core, ns, {"pods": "1"})
    core.create_namespaced_pod(ns, _pod("first", args=["sleep 2"]))  # runs well past the next call
    assert _refused(core.create_namespaced_pod, ns, _pod("second", args=["sleep 30"]))["message"] == (
        'pods "second" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1')
    wait_until(lambda: core.read_namespaced_pod("first", ns).status.phase == "Succeeded", timeout=15,
               what="first pod Succeeded")
    wait_until(lambda: core.read_namespaced_resource_quota("q", ns).status.used == {"pods": "0"},
               what="the finished pod no longer counted")
    core.create_namespaced_pod(ns, _pod("second", args=["sleep 30"]))


# --------------------------------------------------------------------------- the Job controller
def _failed_creates(core, ns, job_name) -> list:
    evs = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={job_name},reason=FailedCreate").items
    return [e for e in evs if e.involved_object.kind == "Job"]


def _job_pods(core, ns, job_name) -> list:
    return core.list_namespaced_pod(ns, label_selector=f"job-name={job_name}").items


def test_refused_job_pods_are_failed_create_events_and_retried(apis):
    core, batch, _ = apis
    ns = _ns(core, {ENFORCE: "restricted"})
    job = batch.create_namespaced_job(ns, _job("run-1"))
    # the controller tries again (with back-off): more than one refusal, each an event on the Job
    events = wait_until(lambda: len(_failed_creates(core, ns, "run-1")) >= 2 and _failed_creates(core, ns, "run-1"),
                        what="two FailedCreate events")
    for ev in events:
        assert ev.type == "Warning" and ev.source.component == "job-controller"
        assert ev.involved_object.uid == job.metadata.uid and ev.involved_object.api_version == "batch/v1"
        assert ev.message.startswith('Error creating: pods "run-1-')
        assert ev.message.endswith(f'" is forbidden: violates PodSecurity "restricted:latest": {RESTRICTED_MAIN}')
    assert _job_pods(core, ns, "run-1") == []
    status = batch.read_namespaced_job_status("run-1", ns).status
    assert not status.active and not status.conditions and status.start_time is not None
    # admission no longer refuses: the next retry makes the pod, and the Job runs
    core.patch_namespace(ns, {"metadata": {"labels": {ENFORCE: None}}})
    wait_until(lambda: _job_pods(core, ns, "run-1"), timeout=10, what="the retried pod")
    wait_until(lambda: batch.read_namespaced_job_status("run-1", ns).status.succeeded, timeout=15,
               what="the Job to succeed")


def test_a_raised_quota_lets_the_retry_through(apis):
    core, batch, _ = apis
    ns = _ns(core)
    _quota(core, ns, {"pods": "0"})
    batch.create_namespaced_job(ns, _job("run-2"))
    ev = wait_until(lambda: _failed_creates(core, ns, "run-2"), what="FailedCreate")[0]
    assert ev.message.startswith('Error creating: pods "run-2-')
    assert ev.message.endswith('" is forbidden: exceeded quota: q, requested: pods=1, used: pods=0, limited: pods=0')
    core.patch_namespaced_resource_quota("q", ns, {"spec": {"hard": {"pods": "1"}}})
    wait_until(lambda: _job_pods(core, ns, "run-2"), timeout=10, what="the retried pod")


def test_the_deadline_still_applies_to_a_job_without_pods(apis):
    core, batch, _ = apis
    ns = _ns(core, {ENFORCE: "restricted"})
    batch.create_namespaced_job(ns, _job("run-3", activeDeadlineSeconds=1))

    def failed():
        conds = batch.read_namespaced_job_status("run-3", ns).status.conditions or []
        return [c for c in conds if c.type == "Failed" and c.status == "True"]
    cond = wait_until(failed, timeout=10, what="DeadlineExceeded")[0]
    assert cond.reason == "DeadlineExceeded"
    assert _job_pods(core, ns, "run-3") == []


def test_a_new_enforce_level_warns_about_existing_pods(apis):
    core = apis[0]
    ns = _ns(core)
    for name in ("b", "a"):
        core.create_namespaced_pod(ns, _pod(name, args=["sleep 30"]))
    _, code, headers = core.patch_namespace_with_http_info(ns, {"metadata": {"labels": {ENFORCE: "baseline"}}})
    assert code == 200 and _warnings(headers) == []  # they meet baseline
    _, _, headers = core.patch_namespace_with_http_info(ns, {"metadata": {"labels": {ENFORCE: "restricted"}}})
    assert _warnings(headers) == [
        f'299 - "existing pods in namespace \\"{ns}\\" violate the new PodSecurity enforce level '
        '\\"restricted:latest\\""',
        '299 - "a (and 1 other pods): allowPrivilegeEscalation != false, unrestricted capabilities, '
        'runAsNonRoot != true, seccompProfile"']
    assert {p.metadata.name for p in core.list_namespaced_pod(ns).items} == {"a", "b"}  # not evicted
