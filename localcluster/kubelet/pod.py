"""The kubelet's pod worker: one per pod bound to the kubelet's node, from start to removal."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Callable, Protocol

from localcluster.apiserver.errors import ApiError
from localcluster.kubelet.containers import Backoff, ContainerRunner
from localcluster.kubelet.dns import write_dns_files
from localcluster.kubelet.logs import pod_dir
from localcluster.kubelet.status import (initial_status, pod_conditions, pod_phase, rfc3339,
                                         waiting)
from localcluster.kubelet.volumes import MountError, Volume, prepare_volumes
from localcluster.apiserver.resources import CONFIGMAPS, PODS, SECRETS
from localcluster.apiserver.store import clone
from localcluster.runtime.base import Container, ExitStatus


log = logging.getLogger(__name__)
TERMINAL = ("Succeeded", "Failed")
HOST_IP = "127.0.0.1"
MIN_SIDECAR_GRACE = 2.0  # the kubelet's minimum grace for a sidecar stopped after the others


class Node(Protocol):
    """What a pod worker needs of its kubelet (the kubelet module implements it; a Protocol so
    that the worker does not import the kubelet that imports it)."""
    store: Any
    state_dir: Path
    config: Any  # KubeletConfig
    registry: Any
    runtime: Any
    network: Any
    fake_network: Any
    events: Any
    allocatable: dict
    workers: dict
    closing: bool

    def lookup(self, res) -> Callable[[str, str], dict | None]: ...
    def admit(self, worker: "PodWorker") -> tuple[str, str] | None: ...
    def fake_pod(self, worker: "PodWorker") -> bool: ...
    def service_env(self, worker: "PodWorker") -> dict[str, str]: ...
    async def sandbox(self, worker: "PodWorker") -> Any: ...


class PodWorker(ContainerRunner):
    """Drives one bound pod from start to removal."""

    def __init__(self, kubelet: Node, pod: dict) -> None:
        self.k = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.uid, self.ns, self.name = meta["uid"], meta["namespace"], meta["name"]
        spec = pod.get("spec") or {}
        self.restart_policy = spec.get("restartPolicy") or "Always"
        self.phase = (pod.get("status") or {}).get("phase") or "Pending"
        self.conditions: list[dict] = list((pod.get("status") or {}).get("conditions") or [])
        self.init_statuses = [initial_status(c) for c in spec.get("initContainers") or []]
        self.sidecars = [c["name"] for c in spec.get("initContainers") or []
                         if c.get("restartPolicy") == "Always"]
        for cs in self.init_statuses:
            cs["state"] = waiting("PodInitializing")
        first = "PodInitializing" if self.init_statuses else "ContainerCreating"
        self.statuses = [initial_status(c) for c in spec.get("containers") or []]
        for cs in self.statuses:
            cs["state"] = waiting(first)
        self.pod_ip: str | None = None
        self.fake = False  # run by the fake runtime, on a loopback IP (Kubelet.fake_pod)
        self.netns: str | None = None  # the pod's network namespace (None: the host's)
        self.dns_mounts: list = []  # /etc/hosts, /etc/resolv.conf of the pod (kubelet_dns)
        self.start_time: str | None = None
        self.sandbox_ready = False
        self.init_done = not self.init_statuses
        self.init_failed = False
        self.running: dict[str, Container] = {}
        self.side_tasks: list[asyncio.Task] = []
        self.poke = asyncio.Event()
        self.ending = asyncio.Event()
        self.removed = False
        self._push_due = False  # a status update is scheduled (_push)
        self.admitted = False  # passed the kubelet's admission: its requests count on the node
        self.rejected = False
        self.reason: str | None = None  # pod-level status reason/message (DeadlineExceeded)
        self.message: str | None = None
        self.lifecycle: asyncio.Task | None = None
        self._kills: set[asyncio.Task] = set()
        self.task = asyncio.ensure_future(self.run())

    # --- notifications ---

    def update(self, pod: dict) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.ending.set()

    def gone(self) -> None:
        """Removed from the store (e.g. a forced delete): containers are killed at once."""
        self.removed = True
        self.ending.set()
        for handle in list(self.running.values()):
            task = asyncio.ensure_future(self.k.runtime.stop(handle, 0))
            self._kills.add(task)
            task.add_done_callback(self._kills.discard)

    # --- main ---

    async def run(self) -> None:
        self.lifecycle = lifecycle = asyncio.ensure_future(self._lifecycle())
        try:
            if self.pod["metadata"].get("deletionTimestamp"):
                self.ending.set()
            await self.ending.wait()
        finally:
            lifecycle.cancel()
            for t in self.side_tasks:
                t.cancel()
            await asyncio.gather(lifecycle, *self.side_tasks, return_exceptions=True)
            if self.k.closing:
                grace = 2.0  # the cluster shuts down: SIGTERM, SIGKILL soon after
            else:
                grace = 0.0 if self.removed else float(
                    self.pod["metadata"].get("deletionGracePeriodSeconds") or 0)
            try:
                await self._kill_all(grace)
            finally:
                self._finish()

    def _network(self):
        return self.k.fake_network if self.fake else self.k.network

    def _finish(self) -> None:
        self._network().release(self.uid)
        self.k.workers.pop(self.uid, None)
        self.k.remove_dirs(pod_dir(self.k.state_dir, self.pod), self._volume_dir())
        if not self.removed and not self.k.closing:
            try:
                self.k.store.delete(PODS, self.ns, self.name, grace_period_seconds=0,
                                    preconditions={"uid": self.uid})
            except ApiError as e:
                if e.code not in (404, 409):
                    log.warning("cannot remove pod %s/%s: %s", self.ns, self.name, e.message)

    def _volume_dir(self) -> Path:
        return self.k.state_dir / "pod-volumes" / self.uid

    async def _kill_all(self, grace: float) -> None:
        """Regular containers first (together), then native sidecars one at a time in reverse
        order of definition, each once the later ones have exited (KEP-753), all within
        `grace` seconds — except a sidecar still gets a short grace of its own."""
        if not self.running:
            return
        if self.k.closing:
            self.removed = True  # nothing is written to the store any more
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        sidecars = [n for n in self.sidecars if n in self.running]
        waves = [[n for n in self.running if n not in sidecars]]
        if self.k.closing:  # the cluster shuts down: no ordering, all at once
            waves[0] += sidecars
        else:
            waves += [[n] for n in reversed(sidecars)]
        for i, wave in enumerate(waves):
            names = [n for n in wave if n in self.running]
            if not names:
                continue
            left = max(deadline - loop.time(), 0.0)
            if i > 0 and grace > 0:
                left = max(left, MIN_SIDECAR_GRACE)
            for name in names:
                self._event("Normal", "Killing", f"Stopping container {name}", name)
            results = await asyncio.gather(
                *(self.k.runtime.stop(self.running[n], left) for n in names),
                return_exceptions=True)
            for name, st in zip(names, results):
                handle = self.running.pop(name)
                cs = self._status_of(name)
                if cs is not None and isinstance(st, ExitStatus):
                    self._set_terminated(cs, handle, st)
            if not self.removed:
                self._push()

    async def _lifecycle(self) -> None:
        if self.phase in TERMINAL:
            return  # a finished pod from before (nothing to run)
        rejection = self.k.admit(self)
        if rejection is not None:
            # as the kubelet's admission (lifecycle/predicate.go): never started, Failed
            reason, message = rejection
            self.phase, self.rejected = "Failed", True
            self.reason, self.message = reason, f"Pod was rejected: {message}"
            self._event_pod("Warning", reason, message)
            self._push()
            return
        self.admitted = True
        self.fake = self.k.fake_pod(self)
        net = await self.k.sandbox(self)
        self.pod_ip, self.netns = net.ip, net.netns
        self.start_time = rfc3339()
        deadline = (self.pod.get("spec") or {}).get("activeDeadlineSeconds")
        if deadline is not None:
            self.side_tasks.append(asyncio.ensure_future(self._deadline(float(deadline))))
        self._push()
        volumes = await self._prepare_volumes()
        self.dns_mounts = write_dns_files(self._pod_view(), self.pod_ip, self._volume_dir() / "etc")
        self.sandbox_ready = True
        self._push()
        spec = self.pod.get("spec") or {}
        for i, c in enumerate(spec.get("initContainers") or []):
            cs = self.init_statuses[i]
            if c.get("restartPolicy") == "Always":
                # a native sidecar: not awaited, but the next one starts only once it is
                # started (running, and its startupProbe succeeded if it has one)
                started = asyncio.Event()
                self.side_tasks.append(asyncio.ensure_future(
                    self._supervise(c, cs, volumes, "Always", False, started)))
                await started.wait()
                continue
            policy = "Never" if self.restart_policy == "Never" else "OnFailure"
            code = await self._supervise(c, cs, volumes, policy, True)
            if code != 0:
                self.init_failed = True
                self._push()
                await self._end_sidecars()
                return
        self.init_done = True
        for cs in self.statuses:
            if cs["state"].get("waiting", {}).get("reason") == "PodInitializing":
                cs["state"] = waiting("ContainerCreating")
        self._push()
        await asyncio.gather(*(self._supervise(c, self.statuses[i], volumes, self.restart_policy,
                                               False)
                               for i, c in enumerate(spec.get("containers") or [])))
        await self._end_sidecars()  # all containers are done for good: sidecars end with them

    async def _end_sidecars(self) -> None:
        for t in self.side_tasks:
            t.cancel()
        await asyncio.gather(*self.side_tasks, return_exceptions=True)
        self.side_tasks.clear()
        await self._kill_all(float((self.pod.get("spec") or {}).get(
            "terminationGracePeriodSeconds", 30)))
        self._network().finished(self.uid)
        self._push()

    async def _deadline(self, seconds: float) -> None:
        """activeDeadlineSeconds of the pod itself: its containers are killed, it fails."""
        await asyncio.sleep(seconds)
        if self.phase in TERMINAL:
            return
        # the containers' supervisors first: none may restart what is stopped below
        others = [t for t in self.side_tasks if t is not asyncio.current_task()]
        for t in (self.lifecycle, *others):
            t.cancel()
        await asyncio.gather(self.lifecycle, *others, return_exceptions=True)
        message = "Pod was active on the node longer than the specified deadline"
        self._event_pod("Normal", "DeadlineExceeded", message)
        await self._kill_all(float((self.pod.get("spec") or {}).get(
            "terminationGracePeriodSeconds", 30)))
        self.phase = "Failed"
        self.reason, self.message = "DeadlineExceeded", message
        self._push()

    # --- steps ---

    async def _wait_poke(self, timeout: float) -> None:
        self.poke.clear()
        try:
            await asyncio.wait_for(self.poke.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def _prepare_volumes(self) -> dict[str, Volume]:
        backoff = Backoff(self.k.config.backoff_initial, self.k.config.retry_interval * 4)
        while True:
            try:
                access = self.k.config.incluster
                return prepare_volumes(self._pod_view(), self._volume_dir(), self.k.state_dir,
                                       self.k.lookup(SECRETS), self.k.lookup(CONFIGMAPS),
                                       tokens=access.token_for if access else None,
                                       host_root=self.k.config.host_root)
            except MountError as e:
                self._event("Warning", "FailedMount", str(e))
            await self._wait_poke(backoff.next())

    def _event_pod(self, etype: str, reason: str, message: str) -> None:
        self.k.events.record(self.pod, etype, reason, message)

    def _status(self) -> dict:
        if self.phase not in TERMINAL:
            phase = pod_phase(self.restart_policy, self.init_done, self.init_failed,
                              self.statuses)
            # as the kubelet since 1.27: the API sees a terminal phase only once every
            # container, the native sidecars too, has stopped
            if phase in TERMINAL and self.running and not self.removed:
                phase = "Running" if self.init_done else "Pending"
            self.phase = phase
        status: dict = {"phase": self.phase}
        if self.reason:
            status["reason"], status["message"] = self.reason, self.message
        if self.rejected:
            return status
        self.conditions = pod_conditions(self.conditions, self.phase, self.sandbox_ready,
                                         self.init_done, self.init_statuses, self.statuses,
                                         self.sidecars)
        status["conditions"] = [dict(c) for c in self.conditions]
        status["hostIP"] = HOST_IP
        status["hostIPs"] = [{"ip": HOST_IP}]
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        if self.start_time:
            status["startTime"] = self.start_time
        if self.init_statuses:
            status["initContainerStatuses"] = [dict(cs) for cs in self.init_statuses]
        status["containerStatuses"] = [dict(cs) for cs in self.statuses]
        qos = (self.pod.get("status") or {}).get("qosClass")
        if qos:
            status["qosClass"] = qos
        return status

    def _pod_view(self) -> dict:
        view = dict(self.pod)
        view["status"] = self._status()
        return view

    def _push(self) -> None:
        """Send the pod's status to the API server, soon: the changes of one turn of the loop
        go out as one update, as the real kubelet's status manager sends the latest status it
        has, not each step (a pod whose sidecar stops with its main container wrote 3 updates
        where 1 says it all; at 1,000 pods ending together these were the stand-in's load)."""
        if not self._push_due:
            self._push_due = True
            asyncio.get_running_loop().call_soon(self._write_status)

    def _write_status(self) -> None:
        self._push_due = False
        status = self._status()

        def fn(obj: dict) -> None:
            if obj["metadata"]["uid"] == self.uid:  # not a new pod of the same name
                obj["status"] = {**(obj.get("status") or {}), **status}
        try:
            pod = self.k.store.mutate(PODS, self.ns, self.name, fn)
            if pod["metadata"]["uid"] == self.uid:
                self.pod = clone(pod)  # kept: mutate gives the store's shared object
        except ApiError as e:
            if e.code != 404:
                raise
