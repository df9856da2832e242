"""Server-side printing (meta.k8s.io/v1 Table) for `kubectl get` of pods, Deployments and Nodes.

kubectl asks for ``Accept: application/json;as=Table;...,application/json``; for other types (and
watches) the server answers with the plain object or list, which kubectl prints as NAME and AGE.
The columns are those of the real server's printers (the wide ones at priority 1).
"""
from __future__ import annotations

import datetime as dt

from localcluster.apiserver.resources import DEPLOYMENTS, NODES, PODS, Resource

_NAME = {"name": "Name", "type": "string", "format": "name", "priority": 0,
         "description": "Name must be unique within a namespace."}


def _col(name: str, priority: int = 0, ctype: str = "string", description: str = "") -> dict:
    return {"name": name, "type": ctype, "format": "", "priority": priority,
            "description": description or name}


def wants_table(accept: str | None) -> bool:
    return bool(accept) and "as=Table" in accept and "g=meta.k8s.io" in accept


def human_age(created: str | None, now: dt.datetime | None = None) -> str:
    """Like Kubernetes' duration.HumanDuration: 45s, 5m10s, 2h, 3d."""
    if not created:
        return "<unknown>"
    try:
        t = dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return "<unknown>"
    s = max(0, int(((now or dt.datetime.now(dt.timezone.utc)) - t).total_seconds()))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 48:
        return f"{h}h"
    return f"{h // 24}d"


def _pod_row(pod: dict) -> list:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    reason = status.get("reason") or status.get("phase") or "Pending"
    for c in statuses:
        state = c.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state and reason == "Running":
            reason = state["terminated"].get("reason") or "Completed"
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    return [pod["metadata"]["name"], f"{ready}/{len(spec.get('containers') or [])}", reason,
            restarts, human_age(pod["metadata"].get("creationTimestamp")),
            status.get("podIP") or "<none>", spec.get("nodeName") or "<none>"]


def _deployment_row(dep: dict) -> list:
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    return [dep["metadata"]["name"],
            f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0),
            human_age(dep["metadata"].get("creationTimestamp")),
            ",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers),
            ",".join(f"{k}={v}" for k, v in sorted(selector.items()))]


def _node_row(node: dict) -> list:
    meta, spec, status = node["metadata"], node.get("spec") or {}, node.get("status") or {}
    ready = next((c.get("status") for c in status.get("conditions") or []
                  if c.get("type") == "Ready"), None)
    state = {"True": "Ready", "False": "NotReady"}.get(ready, "Unknown")
    if spec.get("unschedulable"):
        state += ",SchedulingDisabled"
    labels = meta.get("labels") or {}
    # as the real printer: node-role.kubernetes.io/<role> and kubernetes.io/role=<role>
    roles = sorted({k.split("/", 1)[1] for k in labels
                    if k.startswith("node-role.kubernetes.io/") and k.split("/", 1)[1]}
                   | ({labels["kubernetes.io/role"]} if labels.get("kubernetes.io/role") else set()))
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    info = status.get("nodeInfo") or {}
    return [meta["name"], state, ",".join(roles) or "<none>", human_age(meta.get("creationTimestamp")),
            info.get("kubeletVersion", ""), addresses.get("InternalIP") or "<none>",
            addresses.get("ExternalIP") or "<none>", info.get("osImage") or "<unknown>",
            info.get("kernelVersion") or "<unknown>", info.get("containerRuntimeVersion") or "<unknown>"]


_PRINTERS = {
    PODS: ([_NAME, _col("Ready"), _col("Status"), _col("Restarts", ctype="integer"),
            _col("Age"), _col("IP", 1), _col("Node", 1)], _pod_row),
    DEPLOYMENTS: ([_NAME, _col("Ready"), _col("Up-to-date", ctype="integer"),
                   _col("Available", ctype="integer"), _col("Age"), _col("Containers", 1),
                   _col("Images", 1), _col("Selector", 1)], _deployment_row),
    NODES: ([_NAME, _col("Status"), _col("Roles"), _col("Age"), _col("Version"),
             _col("Internal-IP", 1), _col("External-IP", 1), _col("OS-Image", 1),
             _col("Kernel-Version", 1), _col("Container-Runtime", 1)], _node_row),
}


def supports(res: Resource) -> bool:
    return res in _PRINTERS


def table(res: Resource, items: list[dict], resource_version: str,
          include_object: str | None) -> dict:
    """A Table of items; each row carries the object's metadata (PartialObjectMetadata, as
    kubectl's default) or the whole object with includeObject=Object."""
    columns, row = _PRINTERS[res]
    rows = []
    for obj in items:
        if include_object == "Object":
            embedded = obj
        elif include_object == "None":
            embedded = None
        else:
            embedded = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": obj["metadata"]}
        rows.append({"cells": row(obj), "object": embedded})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": resource_version}, "columnDefinitions": columns,
            "rows": rows}
