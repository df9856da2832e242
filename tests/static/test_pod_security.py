"""Pod Security Standard "restricted" (v1.30) for every pod the project runs.

The hostPath variant (k3d, one cluster node) cannot be restricted — hostPath volumes are refused
even by "baseline" — so there the only violation allowed is "HostPath Volumes" (and with it
"Volume Types"), and the namespaces do not enforce a level. The pvc variant is fully restricted and
enforces it.
"""
from __future__ import annotations

import copy

import pytest

from tests.static import pss
from tests.static.support import (VARIANTS, deployed_node_config, find, generated, generated_job, generated_live,
                                  manifests)

WORKLOADS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


def _workloads(variant: str):
    for o in manifests(variant) + generated(variant) + generated_live(variant):
        if o["kind"] in WORKLOADS:
            yield pytest.param(variant, o, id=f"{variant}:{o['kind']}/{o['metadata']['name']}")


def test_live_sidecar_is_checked_as_a_container():
    """The sidecar is an init container: the checker sees it (and it is restricted too)."""
    job = generated_live("pvc")[0]
    spec = job["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["live"]
    assert pss.check_workload(job) == {}
    spec["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    assert pss.violations(spec)["Privilege Escalation"] == ["initContainers[live]: allowPrivilegeEscalation is not false"]


@pytest.mark.parametrize("variant,obj", [p for v in VARIANTS for p in _workloads(v)])
def test_pods_are_restricted(variant, obj):
    found = pss.check_workload(obj)
    if variant == "pvc":
        assert found == {}
    else:
        # Only the hostPath volumes break it, and only in the pods that have them.
        spec = obj["spec"]["template"]["spec"]
        host_paths = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
        expected = {"HostPath Volumes": [f"volume {n} is a hostPath" for n in host_paths],
                    "Volume Types": [f"volume {n} has type hostPath" for n in host_paths]}
        assert found == ({} if not host_paths else expected)


def test_generated_pvc_job_has_no_host_path_and_is_restricted():
    job = generated_job(deployed_node_config("pvc"))
    assert pss.check_workload(job) == {}
    assert not any("hostPath" in v for v in job["spec"]["template"]["spec"]["volumes"])


def test_pvc_variant_enforces_restricted_in_both_namespaces():
    objs = manifests("pvc")
    for ns in ("v6-node", "v6-jobs"):
        labels = find(objs, "Namespace", ns)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        assert labels["pod-security.kubernetes.io/enforce-version"] == "v1.30"


def test_hostpath_variant_does_not_enforce_what_it_cannot_meet():
    for ns in ("v6-node", "v6-jobs"):
        labels = find(manifests("k3d"), "Namespace", ns)["metadata"]["labels"]
        assert "pod-security.kubernetes.io/enforce" not in labels
        assert labels["pod-security.kubernetes.io/audit"] == "restricted"


def _algorithm_pod():
    return copy.deepcopy(generated_job(deployed_node_config("pvc"))["spec"]["template"]["spec"])


def _container(spec):
    return spec["containers"][0]


# One broken pod per control: the checker must name exactly that control.
BREAKS = [
    ("HostProcess", lambda s: s["securityContext"].update(windowsOptions={"hostProcess": True})),
    ("Host Namespaces", lambda s: s.update(hostNetwork=True)),
    ("Privileged Containers", lambda s: _container(s)["securityContext"].update(privileged=True)),
    ("Host Ports", lambda s: _container(s).update(ports=[{"containerPort": 80, "hostPort": 80}])),
    ("AppArmor", lambda s: s["securityContext"].update(appArmorProfile={"type": "Unconfined"})),
    ("SELinux", lambda s: s["securityContext"].update(seLinuxOptions={"user": "system_u"})),
    ("/proc Mount Type", lambda s: _container(s)["securityContext"].update(procMount="Unmasked")),
    ("Sysctls", lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}])),
    ("Privilege Escalation", lambda s: _container(s)["securityContext"].pop("allowPrivilegeEscalation")),
    ("Running as Non-root user", lambda s: s["securityContext"].update(runAsUser=0)),
]


@pytest.mark.parametrize("control,breaker", BREAKS, ids=[b[0] for b in BREAKS])
def test_each_control_catches_its_violation(control, breaker):
    spec = _algorithm_pod()
    breaker(spec)
    assert set(pss.violations(spec)) == {control}


def test_run_as_non_root_needs_pod_or_every_container():
    spec = _algorithm_pod()
    spec["securityContext"].pop("runAsNonRoot")
    assert set(pss.violations(spec)) == set()  # the container sets it itself
    _container(spec)["securityContext"].pop("runAsNonRoot")
    assert set(pss.violations(spec)) == {"Running as Non-root"}


def test_seccomp_unconfined_and_unset():
    spec = _algorithm_pod()
    spec["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    assert set(pss.violations(spec)) == {"Seccomp (baseline)", "Seccomp (restricted)"}
    spec["securityContext"].pop("seccompProfile")
    assert set(pss.violations(spec)) == {"Seccomp (restricted)"}
    _container(spec)["securityContext"]["seccompProfile"] = {"type": "RuntimeDefault"}
    # every container must set it itself then, the live sidecar too
    assert set(pss.violations(spec)) == {"Seccomp (restricted)"}
    for c in spec.get("initContainers", []):
        c["securityContext"]["seccompProfile"] = {"type": "RuntimeDefault"}
    assert pss.violations(spec) == {}


def test_capabilities():
    spec = _algorithm_pod()
    _container(spec)["securityContext"]["capabilities"] = {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert pss.violations(spec) == {}
    _container(spec)["securityContext"]["capabilities"] = {"drop": ["ALL"], "add": ["CHOWN"]}
    assert set(pss.violations(spec)) == {"Capabilities (restricted)"}
    _container(spec)["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    assert set(pss.violations(spec)) == {"Capabilities (baseline)", "Capabilities (restricted)"}


def test_volume_types():
    spec = _algorithm_pod()
    spec["volumes"].append({"name": "nfs", "nfs": {"server": "nfs.example.internal", "path": "/x"}})
    assert set(pss.violations(spec)) == {"Volume Types"}
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/etc"}})
    assert set(pss.violations(spec)) == {"Volume Types", "HostPath Volumes"}


def test_init_containers_are_checked_too():
    spec = _algorithm_pod()
    spec["initContainers"] = [{"name": "init", "image": "busybox", "securityContext": {"privileged": True}}]
    found = pss.violations(spec)
    assert {"Privileged Containers", "Privilege Escalation", "Capabilities (restricted)"} <= set(found)
    assert all("initContainers[init]" in p for p in found["Privileged Containers"])
