"""ResourceQuota for pods (the quota admission plugin and the pod evaluator of Kubernetes
v1.30), pure: what a pod uses, and whether a quota admits it.

A quota takes part only once its ``status.hard`` is set (the quota controller does that, as
on a real cluster). It then demands that every container request the cpu/memory resources it
limits ("failed quota: q: must specify requests.cpu for: c"), and refuses a pod that would take
the used amount over the hard one ("exceeded quota: q, requested: ..., used: ..., limited: ...").
Terminal pods (Succeeded, Failed) use nothing but ``count/pods``. Scopes Terminating,
NotTerminating, BestEffort and NotBestEffort are understood; a ``scopeSelector`` is not
(such a quota is skipped, with a log line).
"""
from __future__ import annotations

import logging
from decimal import Decimal

from localcluster.apiserver.admission.quantity import Quantity

log = logging.getLogger(__name__)

Usage = dict[str, Quantity]

_POD_RESOURCES = {"pods", "count/pods", "cpu", "memory", "requests.cpu", "requests.memory",
                  "limits.cpu", "limits.memory", "ephemeral-storage",
                  "requests.ephemeral-storage", "limits.ephemeral-storage"}
_PREFIXES = ("hugepages-", "requests.hugepages-")
# A quota on these demands an explicit value in every container (a historical mistake of
# Kubernetes that it keeps for compatibility, and so must we).
_VALIDATION_SET = {"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu",
                   "limits.memory"}


class QuotaRefused(Exception):
    """The message after 'pods "x" is forbidden: '."""


def _native(name: str) -> bool:
    return "/" not in name or name.split("/")[0].endswith("kubernetes.io")


def _extended(name: str) -> bool:
    return not _native(name) and not name.startswith("requests.")


def matching_resources(names) -> list[str]:
    """The quota resource names the pod evaluator counts (requests.<extended> included)."""
    out = []
    for n in names:
        if n in _POD_RESOURCES or n.startswith(_PREFIXES):
            out.append(n)
        elif n.startswith("requests.") and not _native(n[len("requests."):]):
            out.append(n)
    return out


def _add(into: Usage, name: str, q: Quantity) -> None:
    into[name] = into[name] + q if name in into else Quantity(q.value, q.binary)


def _list(raw: dict | None) -> Usage:
    return {k: Quantity.parse(v) for k, v in (raw or {}).items()}


def _compute_usage(requests: Usage, limits: Usage) -> Usage:
    """podComputeUsageHelper: quota names for a set of requests and limits."""
    out: Usage = {"pods": Quantity(Decimal(1))}
    for base in ("cpu", "memory", "ephemeral-storage"):
        if base in requests:
            out[base] = requests[base]
            out[f"requests.{base}"] = requests[base]
        if base in limits:
            out[f"limits.{base}"] = limits[base]
    for name, q in requests.items():
        if name.startswith("hugepages-"):
            out[name] = q
            out["requests." + name] = q
        elif _extended(name):
            out["requests." + name] = q
    return out


def _max(a: Usage, b: Usage) -> Usage:
    out = dict(a)
    for k, q in b.items():
        if k not in out or q.value > out[k].value:
            out[k] = q
    return out


def _sum(a: Usage, b: Usage) -> Usage:
    out = dict(a)
    for k, q in b.items():
        _add(out, k, q)
    return out


def _pod_totals(spec: dict, kind: str) -> Usage:
    """resourcehelper.PodRequests/PodLimits: containers summed, sidecars (init containers with
    restartPolicy Always) added, the largest other init container if larger, plus overhead."""
    def of(c: dict) -> Usage:
        return _list((c.get("resources") or {}).get(kind))
    total: Usage = {}
    for c in spec.get("containers") or []:
        total = _sum(total, of(c))
    sidecars: Usage = {}
    init_peak: Usage = {}
    for c in spec.get("initContainers") or []:
        own = of(c)
        if c.get("restartPolicy") == "Always":
            total = _sum(total, own)
            sidecars = _sum(sidecars, own)
            own = sidecars
        else:
            own = _sum(own, sidecars)
        init_peak = _max(init_peak, own)
    total = _max(total, init_peak)
    return _sum(total, _list(spec.get("overhead")))


def terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def pod_usage(pod: dict) -> Usage:
    usage: Usage = {"count/pods": Quantity(Decimal(1))}
    if terminal(pod):
        return usage
    spec = pod.get("spec") or {}
    return _sum(usage, _compute_usage(_pod_totals(spec, "requests"), _pod_totals(spec, "limits")))


def _best_effort(spec: dict) -> bool:
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        r = c.get("resources") or {}
        if any(k in ("cpu", "memory") for k in list(r.get("requests") or {}) + list(r.get("limits") or {})):
            return False
    return True


def _scope_matches(scope: str, pod: dict) -> bool:
    spec = pod.get("spec") or {}
    terminating = spec.get("activeDeadlineSeconds") is not None and int(spec["activeDeadlineSeconds"]) >= 0
    return {"Terminating": terminating, "NotTerminating": not terminating,
            "BestEffort": _best_effort(spec), "NotBestEffort": not _best_effort(spec)}.get(scope, False)


def applies(quota: dict, pod: dict) -> list[str]:
    """The quota's resources this pod is charged for; [] when the quota does not concern it."""
    spec = quota.get("spec") or {}
    name = quota["metadata"]["name"]
    if spec.get("scopeSelector"):
        log.warning("ResourceQuota %s: scopeSelector is not supported by the local cluster; "
                    "the quota is not applied", name)
        return []
    if not all(_scope_matches(s, pod) for s in spec.get("scopes") or []):
        return []
    return matching_resources(((quota.get("status") or {}).get("hard") or {}).keys())


def _missing_requests(pod: dict, required: list[str]) -> str | None:
    needed = set(required) & _VALIDATION_SET
    if not needed:
        return None
    missing: dict[str, list[str]] = {}
    spec = pod.get("spec") or {}
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        r = c.get("resources") or {}
        have = set(_compute_usage(_list(r.get("requests")), _list(r.get("limits"))))
        for name in sorted(needed - have):
            missing.setdefault(name, []).append(c.get("name", ""))
    if not missing:
        return None
    return "must specify " + "; ".join(f"{r} for: {','.join(sorted(set(cs)))}"
                                       for r, cs in sorted(missing.items()))


def _pretty(usage: Usage, names) -> str:
    return ",".join(f"{n}={usage[n]}" for n in sorted(names) if n in usage)


def admit(pod: dict, quotas: list[dict], used: dict[str, Usage]) -> None:
    """Raise QuotaRefused when a quota refuses the pod. used: each quota's current usage
    (by quota name), counted over the namespace's pods."""
    concerned = []
    for q in sorted(quotas, key=lambda q: q["metadata"]["name"]):
        resources = applies(q, pod)
        if not resources:
            continue
        problem = _missing_requests(pod, resources)
        if problem:
            raise QuotaRefused(f"failed quota: {q['metadata']['name']}: {problem}")
        concerned.append((q, resources))
    delta = pod_usage(pod)
    for q, resources in concerned:
        name = q["metadata"]["name"]
        hard = _list(q["status"]["hard"])
        have = used.get(name, {})
        requested = {r: delta[r] for r in resources if r in delta and delta[r].value != 0}
        exceeded = []
        for r, amount in requested.items():
            before = have.get(r, Quantity(Decimal(0), amount.binary))
            if before.value + amount.value > hard[r].value:
                exceeded.append(r)
        if exceeded:
            zero = {r: have.get(r, Quantity(Decimal(0))) for r in exceeded}
            raise QuotaRefused(f"exceeded quota: {name}, requested: {_pretty(requested, exceeded)}, "
                               f"used: {_pretty(zero, exceeded)}, limited: {_pretty(hard, exceeded)}")


def usage_of(quota: dict, pods: list[dict]) -> Usage:
    """What the quota's pods use of each resource its spec limits (the quota controller's
    status.used); resources nobody uses are 0."""
    names = list((quota.get("spec") or {}).get("hard") or {})
    total: Usage = {}
    scopes = (quota.get("spec") or {}).get("scopes") or []
    for p in pods:
        if all(_scope_matches(s, p) for s in scopes):
            total = _sum(total, pod_usage(p))
    hard = _list((quota.get("spec") or {}).get("hard"))
    return {n: total.get(n, Quantity(Decimal(0), hard[n].binary)) for n in names}
