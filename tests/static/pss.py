"""Pod Security Standards, level "restricted" (Kubernetes v1.30), checked offline on a pod spec.

One function per control of https://kubernetes.io/docs/concepts/security/pod-security-standards/
(baseline controls first: restricted includes them), each returning the violations it finds.
`violations(pod_spec, annotations)` runs them all; `check_workload(obj)` finds the pod template
of a Pod, Deployment, Job, ... first.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

Spec = dict[str, Any]

BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t"}
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                           "persistentVolumeClaim", "projected", "secret"}


def containers(spec: Spec) -> Iterator[tuple[str, dict]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(field) or []:
            yield f"{field}[{c.get('name', '?')}]", c


def _csc(c: dict) -> dict:
    return c.get("securityContext") or {}


def _psc(spec: Spec) -> dict:
    return spec.get("securityContext") or {}


# --- baseline -----------------------------------------------------------------------------------

def host_process(spec: Spec, _a: dict) -> list[str]:
    out = []
    if (_psc(spec).get("windowsOptions") or {}).get("hostProcess"):
        out.append("securityContext.windowsOptions.hostProcess is true")
    out += [f"{w}: windowsOptions.hostProcess is true" for w, c in containers(spec)
            if (_csc(c).get("windowsOptions") or {}).get("hostProcess")]
    return out


def host_namespaces(spec: Spec, _a: dict) -> list[str]:
    return [f"{f} is true" for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f)]


def privileged(spec: Spec, _a: dict) -> list[str]:
    return [f"{w}: privileged is true" for w, c in containers(spec) if _csc(c).get("privileged")]


def capabilities_baseline(spec: Spec, _a: dict) -> list[str]:
    return [f"{w}: adds capability {cap}" for w, c in containers(spec)
            for cap in (_csc(c).get("capabilities") or {}).get("add") or [] if cap not in BASELINE_CAPABILITIES]


def host_path_volumes(spec: Spec, _a: dict) -> list[str]:
    return [f"volume {v.get('name')} is a hostPath" for v in spec.get("volumes") or [] if "hostPath" in v]


def host_ports(spec: Spec, _a: dict) -> list[str]:
    return [f"{w}: hostPort {p['hostPort']}" for w, c in containers(spec) for p in c.get("ports") or []
            if p.get("hostPort")]


def app_armor(spec: Spec, annotations: dict) -> list[str]:
    out = []
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                value == "runtime/default" or value.startswith("localhost/")):
            out.append(f"annotation {key}={value}")
    profiles = [("securityContext", _psc(spec))] + [(w, _csc(c)) for w, c in containers(spec)]
    for where, sc in profiles:
        kind = (sc.get("appArmorProfile") or {}).get("type")
        if kind not in (None, "RuntimeDefault", "Localhost"):
            out.append(f"{where}: appArmorProfile.type {kind}")
    return out


def se_linux(spec: Spec, _a: dict) -> list[str]:
    out = []
    for where, sc in [("securityContext", _psc(spec))] + [(w, _csc(c)) for w, c in containers(spec)]:
        opts = sc.get("seLinuxOptions") or {}
        if opts.get("type", "") not in SELINUX_TYPES:
            out.append(f"{where}: seLinuxOptions.type {opts['type']}")
        out += [f"{where}: seLinuxOptions.{k} is set" for k in ("user", "role") if opts.get(k)]
    return out


def proc_mount(spec: Spec, _a: dict) -> list[str]:
    return [f"{w}: procMount {_csc(c)['procMount']}" for w, c in containers(spec)
            if _csc(c).get("procMount") not in (None, "Default")]


def seccomp_baseline(spec: Spec, _a: dict) -> list[str]:
    scs = [("securityContext", _psc(spec))] + [(w, _csc(c)) for w, c in containers(spec)]
    return [f"{w}: seccompProfile Unconfined" for w, sc in scs
            if (sc.get("seccompProfile") or {}).get("type") == "Unconfined"]


def sysctls(spec: Spec, _a: dict) -> list[str]:
    return [f"sysctl {s.get('name')} is not safe" for s in _psc(spec).get("sysctls") or []
            if s.get("name") not in SAFE_SYSCTLS]


# --- restricted ---------------------------------------------------------------------------------

def volume_types(spec: Spec, _a: dict) -> list[str]:
    out = []
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        out += [f"volume {v.get('name')} has type {k}" for k in sorted(kinds - RESTRICTED_VOLUME_TYPES)]
    return out


def privilege_escalation(spec: Spec, _a: dict) -> list[str]:
    return [f"{w}: allowPrivilegeEscalation is not false" for w, c in containers(spec)
            if _csc(c).get("allowPrivilegeEscalation") is not False]


def run_as_non_root(spec: Spec, _a: dict) -> list[str]:
    pod = _psc(spec).get("runAsNonRoot")
    out = [f"{w}: runAsNonRoot is false" for w, c in containers(spec) if _csc(c).get("runAsNonRoot") is False]
    if pod is not True:
        out += [f"{w}: runAsNonRoot is not true (neither on the pod)" for w, c in containers(spec)
                if _csc(c).get("runAsNonRoot") is not True]
    return out


def run_as_user(spec: Spec, _a: dict) -> list[str]:
    out = ["securityContext.runAsUser is 0"] if _psc(spec).get("runAsUser") == 0 else []
    return out + [f"{w}: runAsUser is 0" for w, c in containers(spec) if _csc(c).get("runAsUser") == 0]


def seccomp_restricted(spec: Spec, _a: dict) -> list[str]:
    ok = ("RuntimeDefault", "Localhost")
    pod = (_psc(spec).get("seccompProfile") or {}).get("type")
    out = []
    for w, c in containers(spec):
        own = (_csc(c).get("seccompProfile") or {}).get("type")
        if own not in ok and not (own is None and pod in ok):
            out.append(f"{w}: seccompProfile is {own or pod or 'unset'}")
    return out


def capabilities_restricted(spec: Spec, _a: dict) -> list[str]:
    out = []
    for w, c in containers(spec):
        caps = _csc(c).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{w}: capabilities.drop does not include ALL")
        out += [f"{w}: adds capability {cap}" for cap in caps.get("add") or [] if cap != "NET_BIND_SERVICE"]
    return out


CONTROLS: list[tuple[str, Callable[[Spec, dict], list[str]]]] = [
    ("HostProcess", host_process), ("Host Namespaces", host_namespaces), ("Privileged Containers", privileged),
    ("Capabilities (baseline)", capabilities_baseline), ("HostPath Volumes", host_path_volumes),
    ("Host Ports", host_ports), ("AppArmor", app_armor), ("SELinux", se_linux), ("/proc Mount Type", proc_mount),
    ("Seccomp (baseline)", seccomp_baseline), ("Sysctls", sysctls),
    ("Volume Types", volume_types), ("Privilege Escalation", privilege_escalation),
    ("Running as Non-root", run_as_non_root), ("Running as Non-root user", run_as_user),
    ("Seccomp (restricted)", seccomp_restricted), ("Capabilities (restricted)", capabilities_restricted),
]


def violations(spec: Spec, annotations: dict | None = None) -> dict[str, list[str]]:
    """{control: [problem, ...]} for every control the pod spec breaks; {} when it is restricted."""
    found = {}
    for name, control in CONTROLS:
        problems = control(spec, annotations or {})
        if problems:
            found[name] = problems
    return found


def pod_template(obj: dict) -> tuple[Spec, dict]:
    """(pod spec, pod annotations) of a Pod or of a workload's pod template."""
    kind = obj.get("kind")
    if kind == "Pod":
        return obj["spec"], (obj.get("metadata") or {}).get("annotations") or {}
    spec = obj.get("spec") or {}
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template = spec["template"]
    return template["spec"], (template.get("metadata") or {}).get("annotations") or {}


def check_workload(obj: dict) -> dict[str, list[str]]:
    spec, annotations = pod_template(obj)
    return violations(spec, annotations)
