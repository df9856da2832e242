"""The scheduler and the kubelet's Node on an in-process store (no HTTP): which changes wake a
waiting pod, and the Node's heartbeat."""
from __future__ import annotations

import asyncio

from localcluster.apiserver.resources import EVENTS, NODES, PODS
from localcluster.apiserver.store import Store
from localcluster.controllers import run_controllers
from localcluster.controllers.scheduler import Scheduler
from localcluster.kubelet.kubelet import KubeletConfig
from localcluster.kubelet.nodestatus import heartbeat, new_node

from .kubelet_fixtures import TEST_IMAGES, InProcess, simple_pod

ALLOC = {"cpu": "2", "memory": "1Gi", "pods": "10"}


def _condition(store, name):
    pod = store.try_get(PODS, "default", name) or {}
    return next((c for c in (pod.get("status") or {}).get("conditions") or []
                 if c["type"] == "PodScheduled"), None)


def _failed_scheduling(store, name):
    return [e for e in store.list(EVENTS, "default")[0]
            if e["involvedObject"]["name"] == name and e["reason"] == "FailedScheduling"]


def _with_scheduler(body):
    async def go():
        store = Store()
        scheduler = Scheduler(store)
        scheduler.start()
        try:
            await body(store, InProcess(store, None))
        finally:
            await scheduler.close()
            store.close()
    asyncio.run(go())


def test_a_pod_waits_for_a_node_and_is_bound_when_one_registers():
    async def body(store, h):
        store.create(PODS, "default", simple_pod("early"))
        cond = await h.until(lambda: _condition(store, "early"), what="PodScheduled")
        assert (cond["status"], cond["reason"], cond["message"]) == (
            "False", "Unschedulable", "no nodes available to schedule pods")
        store.create(NODES, None, new_node("n1", ALLOC, "test://1"))
        pod = await h.until(lambda: store.get(PODS, "default", "early")["spec"].get("nodeName"),
                            what="bound")
        assert pod == "n1"
        cond = _condition(store, "early")
        assert cond["status"] == "True" and "reason" not in cond
    _with_scheduler(body)


def test_a_heartbeat_does_not_wake_waiting_pods_but_more_allocatable_does():
    async def body(store, h):
        store.create(NODES, None, new_node("n1", ALLOC, "test://1"))
        store.create(PODS, "default", simple_pod("big", resources={"requests": {"cpu": "3"}}))
        await h.until(lambda: _failed_scheduling(store, "big"), what="FailedScheduling")
        for _ in range(3):  # renewals change times only
            store.mutate(NODES, None, "n1",
                         lambda n: heartbeat(n, new_node("n1", ALLOC, "test://1")))
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)  # a wrongly woken pod would be tried (and counted) by now
        assert _failed_scheduling(store, "big")[0].get("count", 1) == 1
        bigger = {**ALLOC, "cpu": "4"}
        store.mutate(NODES, None, "n1", lambda n: heartbeat(n, new_node("n1", bigger, "test://1")))
        assert await h.until(lambda: store.get(PODS, "default", "big")["spec"].get("nodeName"),
                             what="bound once the node grew") == "n1"
    _with_scheduler(body)


def test_the_kubelet_renews_its_node(tmp_path):
    async def go():
        store = Store()
        config = KubeletConfig(node_status_interval=0.3)
        task = asyncio.ensure_future(run_controllers(store, tmp_path, [TEST_IMAGES], config))
        h = InProcess(store, tmp_path)
        try:
            node = await h.until(lambda: store.try_get(NODES, None, "localcluster"), what="Node")
            first = {c["type"]: c["lastHeartbeatTime"] for c in node["status"]["conditions"]}
            assert set(first) == {"MemoryPressure", "DiskPressure", "PIDPressure", "Ready"}

            def renewed():
                now = store.get(NODES, None, "localcluster")["status"]["conditions"]
                return all(c["lastHeartbeatTime"] > first[c["type"]] for c in now) and now
            conds = await h.until(renewed, timeout=5, what="a renewed lastHeartbeatTime")
            ready = next(c for c in conds if c["type"] == "Ready")
            assert ready["lastTransitionTime"] == next(
                c for c in node["status"]["conditions"] if c["type"] == "Ready")["lastTransitionTime"]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            store.close()
    asyncio.run(go())


def test_the_kubelet_rejects_a_pod_bound_past_the_scheduler_that_does_not_fit(tmp_path):
    from .kubelet_fixtures import run_in_process

    async def body(h):
        gpu = simple_pod("direct", resources={"limits": {"nvidia.com/gpu": 1}})
        gpu["spec"]["nodeName"] = "localcluster"  # no scheduler: straight to the kubelet
        h.store.create(PODS, "default", gpu)
        pod = await h.until(lambda: (h.pod("direct")["status"].get("phase") == "Failed"
                                     and h.pod("direct")), what="rejected")
        assert pod["status"]["reason"] == "OutOfnvidia.com/gpu"
        assert pod["status"]["message"] == ("Pod was rejected: Node didn't have enough resource: "
                                            "nvidia.com/gpu, requested: 1, used: 0, capacity: 0")
        assert "containerStatuses" not in pod["status"]
        events = [e for e in h.events("direct") if e["reason"] == "OutOfnvidia.com/gpu"]
        assert events and events[0]["type"] == "Warning"
        sel = simple_pod("elsewhere")
        sel["spec"].update(nodeName="localcluster", nodeSelector={"disktype": "ssd"})
        h.store.create(PODS, "default", sel)
        pod = await h.until(lambda: (h.pod("elsewhere")["status"].get("phase") == "Failed"
                                     and h.pod("elsewhere")), what="rejected")
        assert (pod["status"]["reason"], pod["status"]["message"]) == (
            "NodeAffinity", "Pod was rejected: Predicate NodeAffinity failed")
        h.store.delete(PODS, "default", "direct")  # graceful: the kubelet removes it
        await h.until(lambda: h.pod("direct") is None, what="removed")
        # a pod that fits is admitted as before
        ok = simple_pod("fits", resources={"requests": {"cpu": "1"}})
        ok["spec"]["nodeName"] = "localcluster"
        h.store.create(PODS, "default", ok)
        await h.until(lambda: h.pod("fits")["status"].get("phase") == "Succeeded", what="ran")
    run_in_process(tmp_path, body)
