"""The pods of both variants are admitted by Pod Security admission in their namespaces as the
variant labels them: the manifests' workloads and the Jobs the node builds (with the variant's
node configuration, live channel on and off) are created in a local cluster store (the real
admission chain: ServiceAccount, RuntimeClass, validation, PodSecurity, ResourceQuota) and so
are the pods their controllers make from them.

The base (hostPath) variant only warns: every workload and pod is admitted with a "would violate
PodSecurity" warning that names nothing but its hostPath volumes; under "baseline" enforcement
those same pods would be refused, which is why the base does not enforce it. The pvc variant
enforces "restricted" and is admitted without a warning.
"""
from __future__ import annotations

import re

import pytest

from localcluster.apiserver.errors import ApiError
from localcluster.apiserver.resources import DEPLOYMENTS, JOBS, NAMESPACES, PODS
from localcluster.apiserver.store import Store
from localcluster.controllers import deployments, jobs
from tests.static.support import VARIANTS, generated, generated_live, manifests

KINDS = {"Deployment": DEPLOYMENTS, "Job": JOBS}


def _cluster(variant: str) -> Store:
    store = Store(namespaces=("default",))
    for o in manifests(variant):
        if o["kind"] == "Namespace":
            store.create(NAMESPACES, None, o)
    return store


def _workloads(variant: str) -> list[dict]:
    node_jobs = [o for o in generated(variant) + generated_live(variant) if o["kind"] == "Job"]
    return [o for o in manifests(variant) if o["kind"] in KINDS] + node_jobs


def _admit(store: Store, obj: dict) -> tuple[list[str], list[str]]:
    """Create the workload and the pod its controller makes: (its warnings, the pod's)."""
    res, ns = KINDS[obj["kind"]], obj["metadata"]["namespace"]
    workload_warnings, pod_warnings = [], []
    created = store.create(res, ns, obj, warnings=workload_warnings)
    pod = (jobs.pod_from_template(created) if res == JOBS
           else deployments.pod_from_template(created, deployments.template_hash(created["spec"]["template"])))
    store.create(PODS, ns, pod, warnings=pod_warnings)
    return workload_warnings, pod_warnings


def _host_path_only(warning: str, volumes: list[str]) -> bool:
    m = re.fullmatch(r'would violate PodSecurity "restricted:v1\.30": restricted volume types \(volumes? (.*) '
                     r'uses? restricted volume type "hostPath"\)', warning)
    return m is not None and m.group(1) == ", ".join(f'"{v}"' for v in volumes)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_pod_is_admitted_as_the_namespaces_are_labelled(variant):
    store = _cluster(variant)
    workloads = _workloads(variant)
    assert {o["metadata"]["namespace"] for o in workloads} >= {"v6-node", "v6-jobs"}
    assert sum(o["kind"] == "Job" for o in workloads) == 2  # the node's, live channel off and on
    for obj in workloads:
        spec = obj["spec"]["template"]["spec"]
        host_paths = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
        workload_warnings, pod_warnings = _admit(store, obj)  # raises if refused
        labels = store.get(NAMESPACES, None, obj["metadata"]["namespace"])["metadata"]["labels"]
        if variant == "pvc" or not host_paths:
            assert (workload_warnings, pod_warnings) == ([], []), obj["metadata"]["name"]
        else:
            assert "pod-security.kubernetes.io/enforce" not in labels
            assert len(workload_warnings) == 1 and _host_path_only(workload_warnings[0], host_paths)
            assert pod_warnings == workload_warnings


def test_base_pods_would_be_refused_if_the_base_enforced_baseline():
    """The reason the base enforces nothing: "baseline" refuses its algorithm pods."""
    store = _cluster("k3d")
    store.patch(NAMESPACES, None, "v6-jobs", {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "baseline"}}}, "merge")
    job = next(o for o in generated("k3d") if o["kind"] == "Job")
    created = store.create(JOBS, "v6-jobs", job)  # a workload is only warned about
    with pytest.raises(ApiError) as e:
        store.create(PODS, "v6-jobs", jobs.pod_from_template(created))
    assert e.value.code == 403
    assert re.fullmatch(r'pods "v6-run-7-node-a-[a-z0-9]{5}" is forbidden: violates PodSecurity "baseline:latest": '
                        r'hostPath volumes \(volumes "task", "output", "tmp", "db-0"\)', e.value.message)


def test_pvc_pods_are_refused_when_they_break_restricted():
    """The pvc variant's enforcement is real: a pod of its Job made privileged is refused."""
    store = _cluster("pvc")
    job = next(o for o in generated("pvc") if o["kind"] == "Job")
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    warnings: list[str] = []
    created = store.create(JOBS, "v6-jobs", job, warnings=warnings)
    assert warnings == ['would violate PodSecurity "restricted:v1.30": allowPrivilegeEscalation != false '
                        '(container "algorithm" must set securityContext.allowPrivilegeEscalation=false)']
    with pytest.raises(ApiError) as e:
        store.create(PODS, "v6-jobs", jobs.pod_from_template(created))
    assert e.value.code == 403 and 'violates PodSecurity "restricted:v1.30": allowPrivilegeEscalation' in e.value.message
