"""The kubelet's Node object (pure): what it registers at start and how a heartbeat renews it.

Shapes as a v1.30 kubelet writes them (pkg/kubelet/kubelet_node_status.go, nodestatus/setters.go):
the well-known labels (kubernetes.io/hostname, kubernetes.io/os, kubernetes.io/arch and their
beta.kubernetes.io twins), capacity = allocatable (nothing is reserved for system daemons here),
the four conditions with their kubelet reasons, addresses InternalIP and Hostname, nodeInfo.
"""
from __future__ import annotations

import platform
from pathlib import Path

from localcluster.kubelet.status import rfc3339

KUBELET_VERSION = "v1.30.0"  # as the API server's /version
HOST_IP = "127.0.0.1"
KUBELET_PORT = 10250

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
         "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}

# (type, status, reason, message) as the kubelet's condition setters word them
CONDITIONS = (
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)


def architecture() -> str:
    machine = platform.machine().lower()
    return _ARCH.get(machine, machine or "unknown")


def node_labels(name: str) -> dict[str, str]:
    arch = architecture()
    return {"beta.kubernetes.io/arch": arch, "beta.kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch, "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux"}


def _os_image() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            return Path(path).read_text().strip()
        except OSError:
            continue
    return ""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def new_node(name: str, allocatable: dict[str, str], runtime_version: str,
             now: str | None = None) -> dict:
    """The Node a kubelet registers."""
    now = now or rfc3339()
    resources = {k: str(v) for k, v in allocatable.items()}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": node_labels(name),
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                     "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": {},
        "status": {
            "capacity": dict(resources), "allocatable": dict(resources),
            "conditions": [{"type": t, "status": s, "reason": r, "message": m,
                            "lastHeartbeatTime": now, "lastTransitionTime": now}
                           for t, s, r, m in CONDITIONS],
            "addresses": [{"type": "InternalIP", "address": HOST_IP},
                          {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
            "nodeInfo": {"machineID": _machine_id(), "systemUUID": _machine_id(),
                         "bootID": _boot_id(), "kernelVersion": platform.release(),
                         "osImage": _os_image(), "containerRuntimeVersion": runtime_version,
                         "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
                         "operatingSystem": "linux", "architecture": architecture()},
        },
    }


def heartbeat(node: dict, fresh: dict, now: str | None = None) -> None:
    """Renew `node` in place from `fresh` (what the kubelet would register now): capacity,
    allocatable and nodeInfo as now, every condition's lastHeartbeatTime, and a condition's
    lastTransitionTime only when its status changed."""
    now = now or rfc3339()
    status = node.setdefault("status", {})
    old = {c.get("type"): c for c in status.get("conditions") or []}
    conditions = []
    for c in fresh["status"]["conditions"]:
        prev = old.get(c["type"])
        since = prev["lastTransitionTime"] if prev and prev.get("status") == c["status"] \
            and prev.get("lastTransitionTime") else now
        conditions.append({**c, "lastHeartbeatTime": now, "lastTransitionTime": since})
    status["conditions"] = conditions
    for key in ("capacity", "allocatable", "addresses", "daemonEndpoints", "nodeInfo"):
        status[key] = fresh["status"][key]
    # the kubelet keeps its well-known labels, leaving any others alone
    node["metadata"]["labels"] = {**(node["metadata"].get("labels") or {}),
                                  **fresh["metadata"]["labels"]}
