"""The scheduler's pure core: which nodes a pod fits, and the real scheduler's words when none.
The predicates themselves are the kubelet's too (`localcluster.kubelet.fit`).

Filters, in the order of kube-scheduler's default profile (the first that fails decides for a
node, as the framework stops at the first failing filter): NodeUnschedulable (``spec.
unschedulable``), TaintToleration (NoSchedule/NoExecute taints), NodeAffinity (``nodeSelector``
and required node affinity), NodeResourcesFit (pods, cpu, memory, ephemeral-storage and
extended resources such as ``nvidia.com/gpu``: allocatable minus the requests of the pods bound
there that have not finished). Among the nodes that fit, the least requested one (cpu, then
memory) wins, as the default LeastAllocated score prefers.

No preemption: every pod here has the same priority, so preemption never finds victims, and the
message says so as the real one does for equal priorities.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable

from localcluster.kubelet.fit import matches_node, shortfalls, tolerates
from localcluster.kubelet.spec import parse_quantity, pod_requests

NO_NODES = "no nodes available to schedule pods"
NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"


@dataclass(frozen=True)
class NodeInfo:
    """What the filters look at of one Node."""
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    allocatable: dict[str, Decimal] = field(default_factory=dict)
    taints: tuple[dict, ...] = ()
    unschedulable: bool = False


@dataclass(frozen=True)
class Rejection:
    reasons: tuple[str, ...]
    resolvable: bool  # False: UnschedulableAndUnresolvable (preemption cannot help)


def node_info(node: dict) -> NodeInfo:
    meta, spec, status = node["metadata"], node.get("spec") or {}, node.get("status") or {}
    allocatable = {}
    for k, v in (status.get("allocatable") or {}).items():
        try:
            allocatable[k] = parse_quantity(v)
        except ValueError:
            continue  # an unparsable quantity offers nothing
    return NodeInfo(name=meta["name"], labels=dict(meta.get("labels") or {}),
                    allocatable=allocatable,
                    taints=tuple(t for t in spec.get("taints") or [] if isinstance(t, dict)),
                    unschedulable=bool(spec.get("unschedulable")))


# --- filters ----------------------------------------------------------------------------------

def _unschedulable(pod: dict, node: NodeInfo) -> Rejection | None:
    taint = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
    if node.unschedulable and not tolerates((pod.get("spec") or {}).get("tolerations") or [], taint):
        return Rejection(("node(s) were unschedulable",), False)
    return None


def _taints(pod: dict, node: NodeInfo) -> Rejection | None:
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    for taint in node.taints:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return Rejection((f"node(s) had untolerated taint {{{taint.get('key', '')}: "
                              f"{taint.get('value', '')}}}",), False)
    return None


def _affinity(pod: dict, node: NodeInfo) -> Rejection | None:
    if matches_node(pod, node.labels):
        return None
    return Rejection(("node(s) didn't match Pod's node affinity/selector",), False)


def _resources(requests: dict[str, Decimal], node: NodeInfo, used: dict[str, Decimal],
               ) -> Rejection | None:
    lacking = shortfalls(requests, node.allocatable, used)
    if not lacking:
        return None
    return Rejection(tuple("Too many pods" if n == "pods" else f"Insufficient {n}"
                           for n in lacking), True)


def filter_node(pod: dict, requests: dict[str, Decimal], node: NodeInfo,
                used: dict[str, Decimal]) -> Rejection | None:
    """None when the pod fits the node, else why not."""
    for check in (_unschedulable, _taints, _affinity):
        rejection = check(pod, node)
        if rejection is not None:
            return rejection
    return _resources(requests, node, used)


# --- decision ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    node: str | None  # where the pod goes; None: nowhere
    message: str = ""  # when nowhere: the FailedScheduling message


def _histogram(reasons: Iterable[str]) -> str:
    return ", ".join(sorted(f"{n} {r}" for r, n in Counter(reasons).items()))


def fit_error(total: int, rejections: dict[str, Rejection]) -> str:
    """kube-scheduler's FitError text, with the preemption post-filter's."""
    reasons = [r for rej in rejections.values() for r in rej.reasons]
    preemption = [NO_VICTIMS if rej.resolvable else NOT_HELPFUL for rej in rejections.values()]
    return (f"0/{total} nodes are available: {_histogram(reasons)}. preemption: 0/{total} nodes "
            f"are available: {_histogram(preemption)}.")


def _free_share(node: NodeInfo, used: dict[str, Decimal], name: str) -> Decimal:
    alloc = node.allocatable.get(name, Decimal(0))
    return (alloc - used.get(name, Decimal(0))) / alloc if alloc > 0 else Decimal(0)


def place(pod: dict, nodes: Iterable[NodeInfo],
          usage: dict[str, dict[str, Decimal]]) -> Decision:
    """Where the pod goes among nodes, given what the pods bound there request (usage: node
    name -> resource -> amount, with "pods" the number of pods)."""
    nodes = list(nodes)
    if not nodes:
        return Decision(None, NO_NODES)
    requests = pod_requests(pod)
    rejections: dict[str, Rejection] = {}
    feasible = []
    for node in nodes:
        used = usage.get(node.name, {})
        rejection = filter_node(pod, requests, node, used)
        if rejection is None:
            feasible.append(node)
        else:
            rejections[node.name] = rejection
    if not feasible:
        return Decision(None, fit_error(len(nodes), rejections))
    best = min(feasible, key=lambda n: (-_free_share(n, usage.get(n.name, {}), "cpu"),
                                        -_free_share(n, usage.get(n.name, {}), "memory"),
                                        n.name))
    return Decision(best.name)
