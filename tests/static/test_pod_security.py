"""Pod Security Standard "restricted" (v1.30) for every pod the project runs, checked with the
local cluster's own Pod Security admission (localcluster.apiserver.admission.podsecurity, one
implementation), with the real admission's messages.

The hostPath variant (k3d, one cluster node) cannot be restricted — hostPath volumes are refused
even by "baseline" — so there the only violation allowed is "restricted volume types" for the
hostPath volumes, and the namespaces do not enforce a level. The pvc variant is fully restricted
and enforces it. test_admission_of_manifests.py shows both are admitted as labelled.
"""
from __future__ import annotations

import copy

import pytest

from localcluster.apiserver.admission import podsecurity
from tests.static.support import (VARIANTS, deployed_node_config, find, generated, generated_job, generated_live,
                                  manifests)

WORKLOADS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
RESTRICTED = podsecurity.LevelVersion("restricted", (1, 30))
BASELINE = podsecurity.LevelVersion("baseline", (1, 30))


def violations(spec: dict, meta: dict | None = None, lv=RESTRICTED) -> dict[str, str]:
    """{check id: the real admission's "reason (detail)"} of a pod spec."""
    return {v.check: podsecurity.forbidden_detail([v]) for v in podsecurity.evaluate(lv, meta, spec)}


def check_workload(obj: dict, lv=RESTRICTED) -> dict[str, str]:
    meta, spec = podsecurity.pod_template(obj)
    return violations(spec, meta, lv)


def _workloads(variant: str):
    for o in manifests(variant) + generated(variant) + generated_live(variant):
        if o["kind"] in WORKLOADS:
            yield pytest.param(variant, o, id=f"{variant}:{o['kind']}/{o['metadata']['name']}")


def test_live_sidecar_is_checked_as_a_container():
    """The sidecar is an init container: the checker sees it (and it is restricted too)."""
    job = generated_live("pvc")[0]
    spec = job["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["live"]
    assert check_workload(job) == {}
    spec["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    assert violations(spec) == {"allowPrivilegeEscalation": 'allowPrivilegeEscalation != false (container "live" '
                                                            'must set securityContext.allowPrivilegeEscalation=false)'}


@pytest.mark.parametrize("variant,obj", [p for v in VARIANTS for p in _workloads(v)])
def test_pods_are_restricted(variant, obj):
    found = check_workload(obj)
    if variant == "pvc":
        assert found == {}
    else:
        # Only the hostPath volumes break it, and only in the pods that have them.
        spec = obj["spec"]["template"]["spec"]
        host_paths = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
        names = ", ".join(f'"{n}"' for n in host_paths)
        if len(host_paths) == 1:
            expected = f'restricted volume types (volume {names} uses restricted volume type "hostPath")'
        else:
            expected = f'restricted volume types (volumes {names} use restricted volume type "hostPath")'
        assert found == ({} if not host_paths else {"restrictedVolumes": expected})
        if host_paths:  # and that is why this variant cannot even be baseline
            assert set(check_workload(obj, BASELINE)) == {"hostPathVolumes"}


def test_generated_pvc_job_has_no_host_path_and_is_restricted():
    job = generated_job(deployed_node_config("pvc"))
    assert check_workload(job) == {}
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
        assert labels["pod-security.kubernetes.io/warn"] == "restricted"


def _algorithm_pod():
    return copy.deepcopy(generated_job(deployed_node_config("pvc"))["spec"]["template"]["spec"])


def _container(spec):
    return spec["containers"][0]


# One broken pod per check: the admission must name exactly that check, with the real text.
BREAKS = [
    ("windowsHostProcess", lambda s: s["securityContext"].update(windowsOptions={"hostProcess": True}),
     "hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)"),
    ("hostNamespaces", lambda s: s.update(hostNetwork=True, hostPID=True), "host namespaces (hostNetwork, hostPID)"),
    ("privileged", lambda s: _container(s)["securityContext"].update(privileged=True),
     'privileged (container "algorithm" must not set securityContext.privileged=true)'),
    ("hostPorts", lambda s: _container(s).update(ports=[{"containerPort": 80, "hostPort": 80}]),
     'hostPort (container "algorithm" uses hostPort 80)'),
    ("appArmorProfile", lambda s: s["securityContext"].update(appArmorProfile={"type": "Unconfined"}),
     'forbidden AppArmor profile (pod must not set AppArmor profile type to "Unconfined")'),
    ("seLinuxOptions", lambda s: s["securityContext"].update(seLinuxOptions={"type": "spc_t"}),
     'seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type "spc_t")'),
    ("procMount", lambda s: _container(s)["securityContext"].update(procMount="Unmasked"),
     'procMount (container "algorithm" must not set securityContext.procMount to "Unmasked")'),
    ("sysctls", lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
     "forbidden sysctls (kernel.msgmax)"),
    ("allowPrivilegeEscalation", lambda s: _container(s)["securityContext"].pop("allowPrivilegeEscalation"),
     'allowPrivilegeEscalation != false (container "algorithm" must set securityContext.allowPrivilegeEscalation=false)'),
    ("runAsUser", lambda s: s["securityContext"].update(runAsUser=0), "runAsUser=0 (pod must not set runAsUser=0)"),
]


@pytest.mark.parametrize("check,breaker,message", BREAKS, ids=[b[0] for b in BREAKS])
def test_each_check_catches_its_violation(check, breaker, message):
    spec = _algorithm_pod()
    assert _container(spec)["name"] == "algorithm"
    breaker(spec)
    assert violations(spec) == {check: message}


def test_run_as_non_root_needs_pod_or_every_container():
    spec = _algorithm_pod()
    spec["securityContext"].pop("runAsNonRoot")
    assert violations(spec) == {}  # the container sets it itself
    _container(spec)["securityContext"].pop("runAsNonRoot")
    assert violations(spec) == {"runAsNonRoot": 'runAsNonRoot != true (pod or container "algorithm" must set '
                                                "securityContext.runAsNonRoot=true)"}
    _container(spec)["securityContext"]["runAsNonRoot"] = False
    assert violations(spec) == {"runAsNonRoot": 'runAsNonRoot != true (container "algorithm" must not set '
                                                "securityContext.runAsNonRoot=false)"}


def test_seccomp_unconfined_and_unset():
    spec = _algorithm_pod()
    spec["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    # restricted replaces the baseline check by its own, stricter one
    assert violations(spec) == {"seccompProfile_restricted": 'seccompProfile (pod must not set '
                                                             'securityContext.seccompProfile.type to "Unconfined")'}
    assert violations(spec, lv=BASELINE) == {"seccompProfile_baseline": 'seccompProfile (pod must not set '
                                                                         'securityContext.seccompProfile.type to '
                                                                         '"Unconfined")'}
    spec["securityContext"].pop("seccompProfile")
    assert set(violations(spec)) == {"seccompProfile_restricted"}
    assert violations(spec, lv=BASELINE) == {}
    for c in spec["containers"] + spec.get("initContainers", []):
        c["securityContext"]["seccompProfile"] = {"type": "RuntimeDefault"}
    assert violations(spec) == {}


def test_capabilities():
    spec = _algorithm_pod()
    _container(spec)["securityContext"]["capabilities"] = {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert violations(spec) == {}
    _container(spec)["securityContext"]["capabilities"] = {"drop": ["ALL"], "add": ["CHOWN"]}
    assert violations(spec) == {"capabilities_restricted": 'unrestricted capabilities (container "algorithm" must '
                                                           'not include "CHOWN" in securityContext.capabilities.add)'}
    assert violations(spec, lv=BASELINE) == {}  # CHOWN is in the default set
    _container(spec)["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    assert violations(spec) == {"capabilities_restricted": (
        'unrestricted capabilities (container "algorithm" must set securityContext.capabilities.drop=["ALL"]; '
        'container "algorithm" must not include "SYS_ADMIN" in securityContext.capabilities.add)')}
    assert violations(spec, lv=BASELINE) == {"capabilities_baseline": (
        'non-default capabilities (container "algorithm" must not include "SYS_ADMIN" in '
        'securityContext.capabilities.add)')}


def test_volume_types():
    spec = _algorithm_pod()
    spec["volumes"].append({"name": "nfs", "nfs": {"server": "nfs.example.internal", "path": "/x"}})
    assert violations(spec) == {"restrictedVolumes": 'restricted volume types (volume "nfs" uses restricted volume '
                                                     'type "nfs")'}
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/etc"}})
    assert violations(spec) == {"restrictedVolumes": 'restricted volume types (volumes "nfs", "host" use restricted '
                                                     'volume types "hostPath", "nfs")'}
    assert violations(spec, lv=BASELINE) == {"hostPathVolumes": 'hostPath volumes (volume "host")'}


def test_init_containers_are_checked_too_and_first():
    spec = _algorithm_pod()
    spec["initContainers"] = [{"name": "init", "image": "busybox", "securityContext": {"privileged": True}}]
    found = violations(spec)
    assert list(found) == ["privileged", "allowPrivilegeEscalation", "capabilities_restricted"]
    assert found["privileged"] == 'privileged (container "init" must not set securityContext.privileged=true)'
    assert found["allowPrivilegeEscalation"].startswith('allowPrivilegeEscalation != false (container "init" ')
