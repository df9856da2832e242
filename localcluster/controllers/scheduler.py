"""The scheduler (default-scheduler): binds each unscheduled pod to a Node that fits it.

Event-driven, as kube-scheduler's informers: a store subscription sees pods and Nodes change
and wakes the scheduling loop at once, so a new pod is bound within the same loop turn (no
polling, no added latency). Binding goes through the pods/binding subresource's own code
(`localcluster.apiserver.binding`): spec.nodeName and PodScheduled=True, then a Normal
``Scheduled`` event. A pod that fits nowhere gets PodScheduled=False, reason Unschedulable, the
real scheduler's message (`scheduling.fit_error`) and a Warning ``FailedScheduling`` event; it
waits in the unschedulable set until the cluster changes in a way that may let it fit — a bound
pod finishes or is deleted, a Node appears or changes its allocatable, labels, taints or
schedulability — or, at the latest, ``flush_interval`` later (kube-scheduler's
podMaxInUnschedulablePodsDuration, 5 min).

Only pods with ``spec.schedulerName: default-scheduler`` (the default) are taken.
"""
from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

from localcluster.apiserver import binding
from localcluster.apiserver.errors import ApiError
from localcluster.apiserver.resources import NODES, PODS
from localcluster.controllers.scheduling import NodeInfo, node_info, place
from localcluster.kubelet.events import EventRecorder
from localcluster.kubelet.spec import pod_requests
from localcluster.kubelet.status import set_condition

log = logging.getLogger(__name__)

SCHEDULER_NAME = "default-scheduler"
TERMINAL = ("Succeeded", "Failed")
FLUSH_INTERVAL = 300.0

Key = tuple[str, str]  # (namespace, name)


class Scheduler:
    def __init__(self, store, flush_interval: float = FLUSH_INTERVAL) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.events = EventRecorder(store, "")
        self._nodes: dict[str, NodeInfo] = {}
        self._ready: dict[str, bool] = {}
        # the bound, unfinished pods: uid -> (node, requests), and their sums per node
        self._bound: dict[str, tuple[str, dict[str, Decimal]]] = {}
        self._usage: dict[str, dict[str, Decimal]] = {}
        self._active: dict[str, Key] = {}  # to try now, in arrival order
        self._unschedulable: dict[str, Key] = {}  # tried; wait for a change in the cluster
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    # --- lifecycle ---

    def start(self) -> None:
        self.store.subscribe(self._on_event, shared=True)  # read only
        for node in self.store.list(NODES)[0]:
            self._on_event("ADDED", NODES, node)
        for pod in self.store.list(PODS)[0]:
            self._on_event("ADDED", PODS, pod)
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        self.store.unsubscribe(self._on_event)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # --- store notifications (synchronous: only record and wake up) ---

    def _on_event(self, etype: str, res, obj: dict) -> None:
        if res == PODS:
            self._on_pod(etype, obj)
        elif res == NODES:
            self._on_node(etype, obj)

    def _on_pod(self, etype: str, pod: dict) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        uid = meta["uid"]
        node = spec.get("nodeName")
        finished = etype == "DELETED" or (pod.get("status") or {}).get("phase") in TERMINAL
        if finished or node:
            self._active.pop(uid, None)
            self._unschedulable.pop(uid, None)
        if finished:
            if self._unbind(uid):
                self._requeue()  # resources freed: a waiting pod may fit now
            return
        if node:
            if uid not in self._bound:
                self._account(uid, node, pod_requests(pod))
            return
        if meta.get("deletionTimestamp") or \
                (spec.get("schedulerName") or SCHEDULER_NAME) != SCHEDULER_NAME:
            self._active.pop(uid, None)
            self._unschedulable.pop(uid, None)
            return
        if uid not in self._unschedulable and uid not in self._active:
            self._active[uid] = (meta["namespace"], meta["name"])
            self._wake.set()

    def _on_node(self, etype: str, node: dict) -> None:
        name = node["metadata"]["name"]
        if etype == "DELETED":
            self._nodes.pop(name, None)
            self._ready.pop(name, None)
            return
        info = node_info(node)
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (node.get("status") or {}).get("conditions") or [])
        # heartbeats change only timestamps: they must not make every waiting pod retry
        if self._nodes.get(name) != info or self._ready.get(name) != ready:
            self._nodes[name], self._ready[name] = info, ready
            self._requeue()

    def _account(self, uid: str, node: str, requests: dict[str, Decimal]) -> None:
        self._bound[uid] = (node, requests)
        used = self._usage.setdefault(node, {})
        used["pods"] = used.get("pods", Decimal(0)) + 1
        for k, v in requests.items():
            used[k] = used.get(k, Decimal(0)) + v

    def _unbind(self, uid: str) -> bool:
        entry = self._bound.pop(uid, None)
        if entry is None:
            return False
        node, requests = entry
        used = self._usage.get(node, {})
        used["pods"] = used.get("pods", Decimal(0)) - 1
        for k, v in requests.items():
            used[k] = used.get(k, Decimal(0)) - v
        return True

    def _requeue(self) -> None:
        if self._unschedulable:
            self._active.update(self._unschedulable)
            self._unschedulable.clear()
            self._wake.set()

    # --- the loop ---

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_flush = loop.time() + self.flush_interval
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_flush - loop.time()))
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            if loop.time() >= next_flush:
                next_flush = loop.time() + self.flush_interval
                self._requeue()
                self._wake.clear()
            while self._active:
                uid, key = next(iter(self._active.items()))
                del self._active[uid]
                try:
                    self._schedule(uid, *key)
                except Exception:  # one pod must never stop the scheduler
                    log.exception("scheduling pod %s/%s failed", *key)
                await asyncio.sleep(0)  # let the API server serve between pods

    def _schedule(self, uid: str, ns: str, name: str) -> None:
        pod = self.store.try_get(PODS, ns, name)
        if pod is None or pod["metadata"]["uid"] != uid or (pod.get("spec") or {}).get("nodeName") \
                or pod["metadata"].get("deletionTimestamp"):
            return
        decision = place(pod, self._nodes.values(), self._usage)
        if decision.node is None:
            self._unschedulable[uid] = (ns, name)
            self._mark_unschedulable(pod, decision.message)
            return
        try:
            binding.bind(self.store, ns, name, {
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": ns, "uid": uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": decision.node}})
        except ApiError as e:
            log.info("cannot bind pod %s/%s to %s: %s", ns, name, decision.node, e.message)
            return
        self.events.record(pod, "Normal", "Scheduled",
                           f"Successfully assigned {ns}/{name} to {decision.node}",
                           component=SCHEDULER_NAME)

    def _mark_unschedulable(self, pod: dict, message: str) -> None:
        meta = pod["metadata"]

        def condition(obj: dict) -> None:
            if obj["metadata"]["uid"] != meta["uid"]:
                return
            status = obj.setdefault("status", {})
            conds = [dict(c) for c in status.get("conditions") or []]
            set_condition(conds, "PodScheduled", "False", "Unschedulable", message)
            status["conditions"] = conds
            status.setdefault("phase", "Pending")
        try:
            self.store.mutate(PODS, meta["namespace"], meta["name"], condition)
        except ApiError as e:
            if e.code != 404:
                raise
            return
        self.events.record(pod, "Warning", "FailedScheduling", message,
                           component=SCHEDULER_NAME)
