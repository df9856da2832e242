"""The scheduler's pure core: filters, placement and the real scheduler's FailedScheduling text."""
from __future__ import annotations

from decimal import Decimal

import kubernetes_validate
import pytest

from localcluster.controllers.scheduling import NO_NODES, node_info, place
from localcluster.kubelet.fit import tolerates
from localcluster.kubelet.nodestatus import heartbeat, new_node

ALLOC = {"cpu": "4", "memory": "8Gi", "pods": "10", "ephemeral-storage": "10Gi"}


def _node(name="n1", **changes):
    node = new_node(name, {**ALLOC, **changes.pop("allocatable", {})}, "process://localcluster",
                    now="2026-01-01T00:00:00Z")
    node["spec"].update(changes)
    return node


def _pod(*containers, **spec):
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
            "spec": {"containers": list(containers) or [{"name": "c", "image": "a/b"}], **spec}}


def _res(**requests):
    return {"name": "c", "image": "a/b", "resources": {"requests": requests}}


def _place(pod, *nodes, usage=None):
    return place(pod, [node_info(n) for n in nodes], usage or {})


def test_the_kubelets_node_is_a_valid_kubernetes_1_30_node():
    kubernetes_validate.validate(_node(allocatable={"nvidia.com/gpu": "2"}), "1.30", strict=True)


def test_a_gpu_pod_on_a_node_without_gpus_gets_the_real_scheduler_message():
    pod = _pod({"name": "c", "image": "a/b", "resources": {"limits": {"nvidia.com/gpu": 1}}})
    d = _place(pod, _node())
    assert d.node is None
    assert d.message == ("0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 "
                         "nodes are available: 1 No preemption victims found for incoming pod.")
    assert _place(pod, _node(allocatable={"nvidia.com/gpu": "1"})).node == "n1"


def test_requests_are_compared_with_what_the_bound_pods_left():
    pod = _pod(_res(cpu="1500m"), _res(cpu="1"))
    assert _place(pod, _node()).node == "n1"
    d = _place(pod, _node(), usage={"n1": {"cpu": Decimal(2), "pods": Decimal(1)}})
    assert d.message.startswith("0/1 nodes are available: 1 Insufficient cpu.")


def test_several_shortfalls_of_one_node_are_all_named_sorted():
    pod = _pod(_res(cpu="5", memory="9Gi"))
    d = _place(pod, _node(), usage={"n1": {"pods": Decimal(10)}})
    assert d.message.startswith("0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient "
                                "memory, 1 Too many pods. preemption: 0/1 nodes are available: "
                                "1 No preemption victims found for incoming pod.")


def test_reasons_are_counted_over_nodes_and_preemption_is_not_helpful_for_selectors():
    pod = _pod(_res(cpu="3"), nodeSelector={"disk": "ssd"})
    a, b = _node("a"), _node("b")
    a["metadata"]["labels"]["disk"] = "ssd"
    c = _node("c")
    d = _place(pod, a, b, c, usage={"a": {"cpu": Decimal(2)}})
    assert d.node is None
    assert d.message == ("0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match "
                         "Pod's node affinity/selector. preemption: 0/3 nodes are available: 1 No "
                         "preemption victims found for incoming pod, 2 Preemption is not helpful "
                         "for scheduling.")


def test_the_least_requested_node_that_fits_wins():
    pod = _pod(_res(cpu="1"))
    assert _place(pod, _node("a"), _node("b"), usage={"a": {"cpu": Decimal(3)}}).node == "b"
    assert _place(pod, _node("a"), _node("b")).node == "a"  # a tie: by name


def test_no_nodes_at_all():
    assert _place(_pod(), ).message == NO_NODES == "no nodes available to schedule pods"


def test_taints_need_tolerations():
    tainted = _node(taints=[{"key": "gpu", "value": "only", "effect": "NoSchedule"}])
    d = _place(_pod(), tainted)
    assert d.message.startswith("0/1 nodes are available: 1 node(s) had untolerated taint "
                                "{gpu: only}. preemption: 0/1 nodes are available: 1 Preemption "
                                "is not helpful for scheduling.")
    ok = _pod(tolerations=[{"key": "gpu", "operator": "Equal", "value": "only",
                            "effect": "NoSchedule"}])
    assert _place(ok, tainted).node == "n1"
    assert _place(_pod(tolerations=[{"operator": "Exists"}]), tainted).node == "n1"
    soft = _node(taints=[{"key": "x", "effect": "PreferNoSchedule"}])
    assert _place(_pod(), soft).node == "n1"


@pytest.mark.parametrize("toleration,ok", [
    ({"key": "k", "value": "v", "effect": "NoSchedule"}, True),
    ({"key": "k", "value": "w", "effect": "NoSchedule"}, False),
    ({"key": "k", "operator": "Exists"}, True),
    ({"key": "other", "operator": "Exists"}, False),
    ({"key": "k", "value": "v", "effect": "NoExecute"}, False),
])
def test_toleration_matching(toleration, ok):
    assert tolerates([toleration], {"key": "k", "value": "v", "effect": "NoSchedule"}) is ok


def test_a_cordoned_node_takes_no_pods():
    d = _place(_pod(), _node(unschedulable=True))
    assert "1 node(s) were unschedulable." in d.message
    assert "Preemption is not helpful" in d.message


def test_required_node_affinity():
    def pod(op, *values):
        expr = {"key": "kubernetes.io/hostname", "operator": op, "values": list(values)}
        return _pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [expr]}]}}})
    assert _place(pod("In", "n1"), _node()).node == "n1"
    assert _place(pod("NotIn", "n1"), _node()).node is None
    assert _place(pod("In", "b"), _node("a"), _node("b")).node == "b"


def test_a_heartbeat_renews_times_but_keeps_transitions():
    node = _node()
    fresh = new_node("n1", ALLOC, "process://localcluster", now="2026-01-01T00:05:00Z")
    fresh["status"]["conditions"][-1]["status"] = "False"  # Ready changes
    heartbeat(node, fresh, now="2026-01-01T00:05:00Z")
    conds = {c["type"]: c for c in node["status"]["conditions"]}
    assert all(c["lastHeartbeatTime"] == "2026-01-01T00:05:00Z" for c in conds.values())
    assert conds["MemoryPressure"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert conds["Ready"]["lastTransitionTime"] == "2026-01-01T00:05:00Z"
