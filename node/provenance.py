"""What ran, and under which isolation: the provenance a Result carries (CONTRACTS §2).

Pure functions from what the node already holds (the Job and Pod as the API returned them, the
NetworkPolicies it watches, the live sidecar's facts) to one JSON-able record. Hashes are SHA-256
of the object's canonical JSON (sorted keys, no spaces), so anyone holding the same object (from
`kubectl get -o json`, or `python -m node explain`) can recompute them.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

NOT_AVAILABLE = "not available"
# imageID as kubelets report it: containerd "name@sha256:<hex>" or "sha256:<hex>", dockershim
# "docker-pullable://name@sha256:<hex>" or "docker://sha256:<hex>"
_IMAGE_ID = re.compile(r"^(?:[a-z-]+://)?(?:[^@\s]+@)?sha256:([0-9a-f]{64})$")


def canonical_hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def image_digest(image_id: str | None) -> str | None:
    """``sha256:<hex>`` from a container status's imageID; None when it names no digest."""
    m = _IMAGE_ID.match(image_id or "")
    return f"sha256:{m[1]}" if m else None


# --- label selectors (metav1.LabelSelector), as NetworkPolicy podSelector uses them ----------

def selector_matches(selector: dict | None, labels: dict[str, str]) -> bool:
    """A LabelSelector against labels. An empty selector matches everything; a null one (absent
    podSelector is invalid on a NetworkPolicy) matches nothing."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False  # an unknown operator selects nothing (the API server refuses it)
    return True


def policy_record(policy: dict) -> dict:
    meta = policy.get("metadata") or {}
    return {"name": meta.get("name", ""), "sha256": canonical_hash(policy.get("spec") or {}),
            "resourceVersion": meta.get("resourceVersion", "")}


def selecting_policies(policies: Iterable[dict], namespace: str,
                       labels: dict[str, str]) -> list[dict]:
    """Every NetworkPolicy of `namespace` whose podSelector selects a pod with `labels` (a policy
    selects pods of its own namespace only), sorted by name, as {name, sha256, resourceVersion}."""
    out = [policy_record(p) for p in policies
           if (p.get("metadata") or {}).get("namespace", namespace) == namespace
           and selector_matches((p.get("spec") or {}).get("podSelector"), labels)]
    return sorted(out, key=lambda r: r["name"])


def policies_hash(records: list[dict]) -> str | None:
    """One hash over the selecting policies' names and spec hashes; None when there are none."""
    if not records:
        return None
    return canonical_hash([[r["name"], r["sha256"]] for r in records])


# --- the algorithm container's status -------------------------------------------------------

@dataclass(frozen=True)
class ContainerFacts:
    image_id: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None


def container_facts(pods: Iterable[dict], container: str) -> ContainerFacts:
    """The algorithm container's imageID, start/end and exit code, from the last pod that ran it
    (a Job may have made more than one pod: the newest that has a status for it wins)."""
    best: tuple[str, ContainerFacts] | None = None
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") != container:
                continue
            state = cs.get("state") or {}
            term, running = state.get("terminated") or {}, state.get("running") or {}
            facts = ContainerFacts(
                image_id=cs.get("imageID") or None,
                started_at=term.get("startedAt") or running.get("startedAt"),
                finished_at=term.get("finishedAt"),
                exit_code=term.get("exitCode") if isinstance(term.get("exitCode"), int) else None)
            created = (pod.get("metadata") or {}).get("creationTimestamp") or ""
            if best is None or created >= best[0]:
                best = (created, facts)
    return best[1] if best else ContainerFacts()


# --- the record ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Provenance:
    node_id: str
    node_version: str
    image: str                        # as the task named it
    image_id: str | None = None       # as the kubelet reported it
    image_digest: str | None = None   # sha256:<hex> of image_id
    job_spec_sha256: str | None = None
    network_policies: tuple[dict, ...] = ()
    network_policies_sha256: str | None = None
    isolation: dict = field(default_factory=lambda: {"outcome": "not run", "checks": []})
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    usage: dict = field(default_factory=lambda: {"available": False, "reason": NOT_AVAILABLE})
    pin: str | None = None            # the digest the image's tag is pinned to (images.digest: pin)

    @property
    def isolation_failed(self) -> bool:
        return self.isolation.get("outcome") == "failed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id, "node_version": self.node_version,
            "image": self.image, "image_id": self.image_id, "image_digest": self.image_digest,
            "job_spec_sha256": self.job_spec_sha256,
            "network_policies": [dict(r) for r in self.network_policies],
            "network_policies_sha256": self.network_policies_sha256,
            "isolation": self.isolation, "started_at": self.started_at,
            "finished_at": self.finished_at, "exit_code": self.exit_code, "usage": self.usage,
            "pin": self.pin,
        }


def isolation_summary(isolation: dict) -> str:
    """One line for logs: which checks failed."""
    failed = [c.get("name", "?") + (f" ({c['detail']})" if c.get("detail") else "")
              for c in isolation.get("checks") or [] if not c.get("ok")]
    return "; ".join(failed) or str(isolation.get("detail") or "no check passed")
