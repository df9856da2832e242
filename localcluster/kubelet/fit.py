"""Whether a pod fits a node (pure): what the scheduler filters with and the kubelet admits with,
as both use the same predicates in Kubernetes (noderesources.Fits, nodeaffinity, tolerations)."""
from __future__ import annotations

from decimal import Decimal
from typing import Iterable

_RESOURCE_ORDER = ("cpu", "memory", "ephemeral-storage")


def shortfalls(requests: dict[str, Decimal], allocatable: dict[str, Decimal],
               used: dict[str, Decimal]) -> list[str]:
    """The resources the node has too little of for these requests, in kube's order: pods
    (``used["pods"]`` pods are there already), cpu, memory, ephemeral-storage, then extended
    resources (e.g. nvidia.com/gpu) by name. A resource not requested (or 0) never lacks."""
    out = []
    if used.get("pods", Decimal(0)) + 1 > allocatable.get("pods", Decimal(0)):
        out.append("pods")
    names = [n for n in _RESOURCE_ORDER if n in requests] + \
        sorted(n for n in requests if n not in _RESOURCE_ORDER and n != "pods")
    for name in names:
        want = requests[name]
        if want > 0 and want > allocatable.get(name, Decimal(0)) - used.get(name, Decimal(0)):
            out.append(name)
    return out


def tolerates(tolerations: Iterable[dict], taint: dict) -> bool:
    """v1 Toleration.ToleratesTaint: effect (empty = all), key (empty with Exists = all),
    operator Equal (default; values equal) or Exists."""
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("key") and t.get("key") != taint.get("key"):
            continue
        op = t.get("operator") or "Equal"
        if op == "Exists" or (op == "Equal" and t.get("key")
                              and (t.get("value") or "") == (taint.get("value") or "")):
            return True
    return False


def _expression(expr: dict, labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator"), expr.get("values") or []
    have = labels.get(key)
    if op == "In":
        return have is not None and have in values
    if op == "NotIn":
        return have is None or have not in values
    if op == "Exists":
        return have is not None
    if op == "DoesNotExist":
        return have is None
    if op in ("Gt", "Lt") and have is not None and len(values) == 1:
        try:
            a, b = int(have), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def matches_node(pod: dict, labels: dict[str, str]) -> bool:
    """nodeSelector and required node affinity (terms ORed, a term's expressions ANDed)."""
    spec = pod.get("spec") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((((spec.get("affinity") or {}).get("nodeAffinity") or {})
                 .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
                .get("nodeSelectorTerms"))
    if not required:
        return True
    return any(term.get("matchExpressions") and
               all(_expression(e, labels) for e in term["matchExpressions"])
               for term in required)
