"""Unit tests of the local cluster's admission plugins (pure logic, real pod objects: the node's
own Job pods from node/manifests.py and deliberately broken ones), of the event correlation and
of the Job controller's back-off for refused pods (on a Store, in process)."""
from __future__ import annotations

import asyncio
import copy
from decimal import Decimal

import pytest

from localcluster.apiserver.admission import podsecurity, quota, runtimeclass
from localcluster.apiserver.admission.quantity import Quantity, QuantityError
from localcluster.apiserver.errors import ApiError
from localcluster.apiserver.resources import EVENTS, JOBS, NAMESPACES, PODS, RESOURCEQUOTAS
from localcluster.apiserver.store import Store
from localcluster.controllers.jobs import JobController, JobControllerConfig
from localcluster.controllers.quota import quota_status
from localcluster.kubelet.events import COMBINED_PREFIX, EventRecorder
from tests.static.support import deployed_node_config, generated_job

LV = podsecurity.LevelVersion


def _node_pod(variant="pvc") -> dict:
    """A pod as the Job controller makes it from the node's Job."""
    tmpl = generated_job(deployed_node_config(variant))["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "run-7-abcde", "namespace": "v6-jobs"},
            "spec": copy.deepcopy(tmpl["spec"])}


# --------------------------------------------------------------------------- podsecurity
def test_namespace_policy_defaults_and_fails_closed():
    assert podsecurity.namespace_policy({}).fully_privileged
    p = podsecurity.namespace_policy({"pod-security.kubernetes.io/enforce": "baseline",
                                      "pod-security.kubernetes.io/enforce-version": "v1.25",
                                      "pod-security.kubernetes.io/warn": "restricted"})
    assert (str(p.enforce), str(p.warn), str(p.audit)) == ("baseline:v1.25", "restricted:latest", "privileged:latest")
    bad = podsecurity.namespace_policy({"pod-security.kubernetes.io/enforce": "strict"})
    assert str(bad.enforce) == "restricted:latest"
    bad = podsecurity.namespace_policy({"pod-security.kubernetes.io/enforce": "baseline",
                                        "pod-security.kubernetes.io/enforce-version": "1.25"})
    assert str(bad.enforce) == "restricted:latest"
    assert podsecurity.label_causes({"pod-security.kubernetes.io/audit-version": "v1.x"})[0]["field"] == \
        "metadata.labels[pod-security.kubernetes.io/audit-version]"


def test_the_node_pods_meet_restricted_and_the_hostpath_ones_not_even_baseline():
    assert podsecurity.evaluate(LV("restricted"), {}, _node_pod()["spec"]) == []
    found = podsecurity.evaluate(LV("baseline"), {}, _node_pod("k3d")["spec"])
    assert [v.check for v in found] == ["hostPathVolumes"]
    assert podsecurity.forbidden_detail(found) == 'hostPath volumes (volumes "task", "output", "tmp", "db-0")'


def test_checks_follow_the_policy_version():
    spec = _node_pod()["spec"]
    spec["containers"][0]["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    # capabilities_restricted exists from v1.22 and then replaces the baseline check
    assert [v.check for v in podsecurity.evaluate(LV("restricted", (1, 22)), {}, spec)] == ["capabilities_restricted"]
    assert [v.check for v in podsecurity.evaluate(LV("restricted", (1, 21)), {}, spec)] == ["capabilities_baseline"]
    spec = _node_pod()["spec"]
    spec["securityContext"]["sysctls"] = [{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}]
    assert podsecurity.evaluate(LV("baseline", (1, 29)), {}, spec) == []
    assert [v.reason for v in podsecurity.evaluate(LV("baseline", (1, 28)), {}, spec)] == ["forbidden sysctls"]
    # versions newer than this API server's are its latest
    assert podsecurity.evaluate(LV("baseline", (1, 99)), {}, spec) == []


def test_privileged_level_checks_nothing():
    spec = _node_pod("k3d")["spec"]
    spec["hostNetwork"] = True
    assert podsecurity.evaluate(LV("privileged"), {}, spec) == []


def test_app_armor_annotations():
    meta = {"annotations": {"container.apparmor.security.beta.kubernetes.io/algorithm": "unconfined"}}
    found = podsecurity.evaluate(LV("baseline"), meta, _node_pod()["spec"])
    assert podsecurity.forbidden_detail(found) == (
        'forbidden AppArmor profile (annotation must not set AppArmor profile type to '
        '"container.apparmor.security.beta.kubernetes.io/algorithm=\\"unconfined\\"")')


# --------------------------------------------------------------------------- quantities
@pytest.mark.parametrize("raw,canonical", [("500m", "500m"), ("1.5Gi", "1536Mi"), ("1000", "1k"),
                                           ("0.5", "500m"), (2, "2"), ("1500", "1500"), ("0", "0")])
def test_quantities_print_canonically(raw, canonical):
    assert str(Quantity.parse(raw)) == canonical


def test_a_bad_quantity_is_a_clear_error():
    with pytest.raises(QuantityError, match="quantities must match"):
        Quantity.parse("lots")


# --------------------------------------------------------------------------- quota
def _q(hard, **spec) -> dict:
    return {"metadata": {"name": "q"}, "spec": {"hard": hard, **spec}, "status": {"hard": hard}}


def test_pod_usage_sums_containers_adds_sidecars_and_overhead_and_takes_the_init_peak():
    pod = {"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                                   {"name": "b", "resources": {"requests": {"cpu": "200m"}}}],
                    "initContainers": [{"name": "live", "restartPolicy": "Always",
                                        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}},
                                       {"name": "init", "resources": {"requests": {"cpu": "2", "memory": "1Mi"}}}],
                    "overhead": {"cpu": "50m"}}}
    usage = {k: str(v) for k, v in quota.pod_usage(pod).items()}
    # cpu: max(100m+200m+10m, 2+10m) + 50m overhead; memory: 64Mi+32Mi
    assert usage["requests.cpu"] == "2060m" and usage["cpu"] == "2060m"
    assert usage["requests.memory"] == "96Mi" and usage["pods"] == "1" and usage["count/pods"] == "1"
    pod["status"] = {"phase": "Succeeded"}
    assert {k: str(v) for k, v in quota.pod_usage(pod).items()} == {"count/pods": "1"}


def test_the_node_pod_is_charged_its_requests_and_gpu_limits_become_requests():
    store = Store()
    pod = _node_pod()
    pod["metadata"] = {"name": "g"}
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "1"
    stored = store.create(PODS, "default", pod)
    assert stored["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"
    usage = quota.pod_usage(stored)
    assert usage["requests.nvidia.com/gpu"].value == 1
    with pytest.raises(quota.QuotaRefused, match=r"^exceeded quota: q, requested: requests.nvidia.com/gpu=1, "
                                                 r"used: requests.nvidia.com/gpu=1, limited: requests.nvidia.com/gpu=1$"):
        quota.admit(stored, [_q({"requests.nvidia.com/gpu": "1"})],
                    {"q": {"requests.nvidia.com/gpu": Quantity(Decimal(1))}})


def test_quota_demands_explicit_cpu_and_memory_in_every_container():
    pod = {"spec": {"containers": [{"name": "a"}, {"name": "b", "resources": {"limits": {"cpu": "1"}}}]}}
    with pytest.raises(quota.QuotaRefused) as e:
        quota.admit(pod, [_q({"limits.cpu": "4", "requests.memory": "1Gi"})], {})
    assert str(e.value) == "failed quota: q: must specify limits.cpu for: a; requests.memory for: a,b"
    # a quota without a status.hard yet (the controller has not seen it) takes no part
    unseen = _q({"limits.cpu": "4"})
    unseen["status"] = {}
    quota.admit(pod, [unseen], {})


def test_quota_scopes():
    best_effort = {"spec": {"containers": [{"name": "a"}]}}
    quota.admit(best_effort, [_q({"pods": "0"}, scopes=["NotBestEffort"])], {})
    with pytest.raises(quota.QuotaRefused, match="exceeded quota: q, requested: pods=1"):
        quota.admit(best_effort, [_q({"pods": "0"}, scopes=["BestEffort", "NotTerminating"])], {})


def test_quota_status_counts_only_live_pods():
    q = {"metadata": {"name": "q"}, "spec": {"hard": {"requests.memory": "1Gi", "pods": "5"}}}
    pods = [{"metadata": {}, "spec": {"containers": [{"resources": {"requests": {"memory": "256Mi"}}}]},
             "status": {"phase": phase}} for phase in ("Running", "Pending", "Failed")]
    assert quota_status(q, pods) == {"hard": {"requests.memory": "1Gi", "pods": "5"},
                                     "used": {"requests.memory": "512Mi", "pods": "2"}}


# --------------------------------------------------------------------------- runtimeclass
def test_runtime_class_overhead_and_scheduling():
    rc = {"metadata": {"name": "nvidia"}, "handler": "nvidia", "overhead": {"podFixed": {"memory": "64Mi"}},
          "scheduling": {"nodeSelector": {"gpu": "true"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]}}
    spec = _node_pod()["spec"]
    spec["runtimeClassName"] = "nvidia"
    runtimeclass.admit(spec, rc)
    assert spec["overhead"] == {"memory": "64Mi"} and spec["nodeSelector"] == {"gpu": "true"}
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    spec["overhead"] = {"memory": "1Mi"}
    with pytest.raises(runtimeclass.RuntimeClassRefused, match="Pod's Overhead doesn't match"):
        runtimeclass.admit(spec, rc)
    spec.pop("overhead")
    spec["nodeSelector"] = {"gpu": "false"}
    with pytest.raises(runtimeclass.RuntimeClassRefused, match=r"conflict: runtimeClass.scheduling."
                                                               r"nodeSelector\[gpu\] = true"):
        runtimeclass.admit(spec, rc)
    with pytest.raises(runtimeclass.RuntimeClassRefused, match='^pod rejected: RuntimeClass "nvidia" not found$'):
        runtimeclass.admit(spec, None)


def test_runtime_class_refusal_names_the_generate_name_prefix():
    """Mutating admission runs before the name is generated, so the message shows the prefix."""
    store = Store()
    pod = _node_pod()
    pod["metadata"] = {"generateName": "run-7-"}
    pod["spec"]["runtimeClassName"] = "nvidia"
    with pytest.raises(ApiError) as e:
        store.create(PODS, "default", pod)
    assert e.value.message == 'pods "run-7-" is forbidden: pod rejected: RuntimeClass "nvidia" not found'


# --------------------------------------------------------------------------- events
def test_similar_events_are_combined_from_the_tenth_on():
    store = Store()
    pod = store.create(PODS, "default", {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "i"}]}})
    rec = EventRecorder(store, "node")
    for i in range(12):
        rec.record(pod, "Warning", "FailedCreate", f"Error creating: pods \"x-{i}\" is forbidden")
    rec.record(pod, "Warning", "FailedCreate", 'Error creating: pods "x-0" is forbidden')  # a repeat
    events = sorted(store.list(EVENTS, "default")[0], key=lambda e: e["metadata"]["name"])
    singles = [e for e in events if not e["message"].startswith(COMBINED_PREFIX)]
    combined = [e for e in events if e["message"].startswith(COMBINED_PREFIX)]
    assert len(singles) == 9 and all(e["count"] == 1 for e in singles)
    assert len(combined) == 1 and combined[0]["count"] == 4
    assert combined[0]["message"] == COMBINED_PREFIX + 'Error creating: pods "x-0" is forbidden'


# --------------------------------------------------------------------------- the Job controller
def test_refused_pods_are_retried_with_exponential_back_off():
    async def go():
        store = Store()
        store.create(NAMESPACES, None, {"metadata": {"name": "jobs", "labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}})
        ctl = JobController(store, JobControllerConfig(create_backoff_initial=0.02, create_backoff_max=0.16))
        task = asyncio.ensure_future(ctl.run())
        try:
            store.create(JOBS, "jobs", {"metadata": {"name": "j"}, "spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "main", "image": "i"}]}}}})

            def attempts() -> int:
                return sum(e["count"] for e in store.list(EVENTS, "jobs")[0] if e["reason"] == "FailedCreate")
            loop = asyncio.get_running_loop()
            start = loop.time()
            while attempts() < 6:  # 0, 0.02, 0.06, 0.14, 0.30, 0.46 s: doubling, then capped
                assert loop.time() - start < 5, "the controller stopped retrying"
                await asyncio.sleep(0.01)
            elapsed = loop.time() - start
            assert elapsed >= 0.45, f"6 attempts after {elapsed:.2f}s: no back-off"
            assert store.list(PODS, "jobs")[0] == []
            store.patch(NAMESPACES, None, "jobs", {"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": None}}}, "merge")
            while not store.list(PODS, "jobs")[0]:
                assert loop.time() - start < 5, "no pod after the namespace allowed it"
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            store.close()
    asyncio.run(go())


def test_quota_refusal_in_the_store_uses_live_usage():
    store = Store()
    store.create(RESOURCEQUOTAS, "default", {"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}})
    q = store.get(RESOURCEQUOTAS, "default", "q")
    store.mutate(RESOURCEQUOTAS, "default", "q", lambda o: o.update(status=quota_status(q, [])))
    store.create(PODS, "default", {"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    with pytest.raises(ApiError) as e:
        store.create(PODS, "default", {"metadata": {"name": "b"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    assert e.value.code == 403 and e.value.message == (
        'pods "b" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1')
    store.mutate(PODS, "default", "a", lambda o: o["status"].update(phase="Failed"))
    store.create(PODS, "default", {"metadata": {"name": "b"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})


def test_malformed_quantities_cannot_be_stored():
    store = Store()
    with pytest.raises(ApiError) as e:
        store.create(RESOURCEQUOTAS, "default", {"metadata": {"name": "q"}, "spec": {"hard": {"cpu": "lots"}}})
    assert e.value.code == 400 and e.value.message.startswith(
        'ResourceQuota in version "v1" cannot be handled as a ResourceQuota: quantities must match')
    with pytest.raises(ApiError) as e:
        store.create(PODS, "default", {"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "i", "resources": {"limits": {"memory": "1 Gi"}}}]}})
    assert e.value.code == 400 and e.value.message.startswith('Pod in version "v1" cannot be handled as a Pod')
