"""dryRun=All as a real API server serves it: every stage of a write (defaulting, admission,
validation, RBAC) runs and answers as for real, and nothing is stored, counted or watched."""
from __future__ import annotations

import json
import uuid

import kubernetes
import pytest
from kubernetes.client.rest import ApiException

from localcluster.testing import LocalCluster

from .kubelet_fixtures import TEST_IMAGES

pytestmark = pytest.mark.integration
ENFORCE = "pod-security.kubernetes.io/enforce"


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(images=[TEST_IMAGES]) as lc:
        yield lc


@pytest.fixture
def apis(cluster):
    client = cluster.api_client()
    return kubernetes.client.CoreV1Api(client), kubernetes.client.BatchV1Api(client)


def _ns(core, labels=None) -> str:
    name = "d-" + uuid.uuid4().hex[:8]
    core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    return name


def _pod(name, **pod_spec):
    return {"metadata": {"name": name}, "spec": {"restartPolicy": "Never", **pod_spec,
                                                 "containers": [{"name": "main", "image": "test/sh",
                                                                 "args": ["exit 0"]}]}}


def _refused(fn, *args, **kwargs) -> dict:
    with pytest.raises(ApiException) as e:
        fn(*args, **kwargs)
    return {"code": e.value.status, **json.loads(e.value.body)}


def test_a_dry_run_create_answers_the_object_and_stores_nothing(apis):
    core, _ = apis
    ns = _ns(core)
    before = core.list_namespaced_pod(ns).metadata.resource_version
    pod = core.create_namespaced_pod(ns, _pod("p"), dry_run="All")
    assert pod.metadata.name == "p" and pod.metadata.uid  # as it would be, defaults applied
    assert pod.metadata.resource_version in (None, "")
    assert pod.spec.service_account_name == "default" and pod.spec.dns_policy == "ClusterFirst"
    assert core.list_namespaced_pod(ns).items == []
    # nothing happened: a watch from before sees no event
    w = kubernetes.watch.Watch()
    events = list(w.stream(core.list_namespaced_pod, ns, resource_version=before,
                           timeout_seconds=1))
    assert events == []
    core.create_namespaced_pod(ns, _pod("p"))  # the name is still free


def test_a_dry_run_shows_the_admission_refusal_a_real_create_gets(apis):
    core, _ = apis
    ns = _ns(core, {ENFORCE: "restricted"})
    dry = _refused(core.create_namespaced_pod, ns, _pod("p"), dry_run="All")
    real = _refused(core.create_namespaced_pod, ns, _pod("p"))
    assert dry == real
    assert dry["code"] == 403 and 'violates PodSecurity "restricted:latest"' in dry["message"]


def test_a_dry_run_job_is_validated_and_not_run(apis, cluster):
    core, batch = apis
    ns = _ns(core)
    job = {"metadata": {"name": "j"}, "spec": {"template": _pod("x")}}
    bad = {"metadata": {"name": "j"}, "spec": {"template": _pod("x", restartPolicy="Always")}}
    status = _refused(batch.create_namespaced_job, ns, bad, dry_run="All")
    assert status["code"] == 422 and "spec.template.spec.restartPolicy" in status["message"]
    made = batch.create_namespaced_job(ns, job, dry_run="All")
    assert made.spec.selector.match_labels  # defaulted, with the uid it would have
    assert batch.list_namespaced_job(ns).items == []
    assert core.list_namespaced_pod(ns).items == []


def test_dry_run_update_patch_and_delete_change_nothing(apis):
    core, _ = apis
    ns = _ns(core)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"k": "v"}})
    stored = core.read_namespaced_config_map("c", ns)
    patched = core.patch_namespaced_config_map("c", ns, {"data": {"k": "new"}}, dry_run="All")
    assert patched.data == {"k": "new"}
    stored.data = {"k": "replaced"}
    assert core.replace_namespaced_config_map("c", ns, stored, dry_run="All").data == {
        "k": "replaced"}
    core.delete_namespaced_config_map("c", ns, dry_run="All")
    after = core.read_namespaced_config_map("c", ns)
    assert after.data == {"k": "v"}
    assert after.metadata.resource_version == stored.metadata.resource_version


def test_an_unknown_dry_run_value_is_refused_as_the_real_server_refuses_it(apis):
    core, _ = apis
    ns = _ns(core)
    status = _refused(core.create_namespaced_pod, ns, _pod("p"), dry_run="Some")
    assert status["code"] == 422 and status["reason"] == "Invalid"
    assert status["message"] == ('CreateOptions.meta.k8s.io "" is invalid: dryRun: Unsupported '
                                 'value: []string{"Some"}: supported values: "All"')
    assert core.list_namespaced_pod(ns).items == []
