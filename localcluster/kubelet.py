"""The kubelet (and scheduler) of the single node ``localcluster``.

For every pod it: schedules it (``spec.nodeName``, condition PodScheduled; a pod asking for more
than the node's allocatable resources, or for a resource the node lacks such as
``nvidia.com/gpu``, stays Pending/Unschedulable), gives it a loopback pod IP (127.0.1.x), sets up
its volumes (`kubelet_volumes`), runs its init containers in order and then its containers
through a `Runtime`, restarts them per ``restartPolicy`` (back-off 1s, 2s, 4s… capped at 10s —
shorter than a real kubelet's 10s…5min), and writes the pod status and core/v1 Events as a real
kubelet does. A pod marked for deletion gets SIGTERM, SIGKILL after its grace period, and is then
removed from the store (``delete(..., grace_period_seconds=0)``).

Logs: `read_log` (re-exported from `kubelet_logs`) serves ``pods/{name}/log``; files are kept until
the pod is deleted.
"""
from __future__ import annotations

import asyncio
import logging
import secrets as pysecrets
import shutil
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from localcluster.errors import ApiError
from localcluster.kubelet_events import EventRecorder
from localcluster.kubelet_logs import LogError, log_file, pod_dir, read_log, resolve_log_path
from localcluster.kubelet_spec import (NODE_NAME, ConfigError, build_argv, build_env,
                                       cpu_limit_millis, identity, memory_limit, parse_quantity,
                                       pod_requests, unschedulable_message)
from localcluster.kubelet_status import (initial_status, pod_conditions, pod_phase, rfc3339,
                                         set_condition, waiting)
from localcluster.kubelet_volumes import MountError, Volume, container_mounts, prepare_volumes
from localcluster.registry import ImageNotFound, InvalidImageName, Registry
from localcluster.resources import CONFIGMAPS, PODS, SECRETS
from localcluster.runtime.base import (Container, ContainerSpec, CreateContainerError,
                                       ExitStatus, Runtime)

__all__ = ["Kubelet", "KubeletConfig", "read_log", "resolve_log_path", "LogError"]

log = logging.getLogger(__name__)
TERMINAL = ("Succeeded", "Failed")
HOST_IP = "127.0.0.1"


@dataclass
class KubeletConfig:
    node_name: str = NODE_NAME
    allocatable: dict[str, str] = field(default_factory=lambda: {
        "cpu": "64", "memory": "256Gi", "pods": "250", "ephemeral-storage": "1Ti"})
    backoff_initial: float = 1.0
    backoff_max: float = 10.0
    retry_interval: float = 2.0  # re-check of unschedulable pods and failed mounts

    def allocatable_quantities(self) -> dict[str, Decimal]:
        return {k: parse_quantity(v) for k, v in self.allocatable.items()}


class Backoff:
    def __init__(self, initial: float, cap: float) -> None:
        self.initial, self.cap, self.n = initial, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.initial * (2 ** self.n))
        self.n += 1
        return delay


class IpPool:
    """127.0.1.2 … 127.0.1.254, handed out in turn, skipping addresses in use."""

    def __init__(self) -> None:
        self._next = 2
        self._used: dict[str, str] = {}  # ip -> pod uid

    def allocate(self, uid: str) -> str:
        for _ in range(253):
            ip = f"127.0.1.{self._next}"
            self._next = 2 if self._next >= 254 else self._next + 1
            if ip not in self._used:
                self._used[ip] = uid
                return ip
        log.warning("all 253 pod IPs are in use; sharing one")
        return f"127.0.1.{self._next}"

    def release(self, ip: str | None, uid: str) -> None:
        if ip and self._used.get(ip) == uid:
            del self._used[ip]


class Kubelet:
    def __init__(self, store, state_dir: Path, registry: Registry, runtime: Runtime,
                 config: KubeletConfig | None = None) -> None:
        self.store = store
        self.state_dir = Path(state_dir)
        self.registry = registry
        self.runtime = runtime
        self.config = config or KubeletConfig()
        self.allocatable = self.config.allocatable_quantities()
        self.ips = IpPool()
        self.events = EventRecorder(store, self.config.node_name)
        self.workers: dict[str, PodWorker] = {}
        self.closing = False

    def start(self) -> None:
        self.store.subscribe(self._on_event)
        for pod in self.store.list(PODS)[0]:
            self._on_event("ADDED", PODS, pod)

    async def close(self) -> None:
        """Stop every pod's containers (SIGTERM, then SIGKILL) and all workers."""
        self.closing = True
        self.store.unsubscribe(self._on_event)
        workers = list(self.workers.values())
        for w in workers:
            w.task.cancel()
        await asyncio.gather(*(w.task for w in workers), return_exceptions=True)
        await self.runtime.close()

    # --- store notifications (synchronous: only record and wake up) ---

    def _on_event(self, etype: str, res, obj: dict) -> None:
        if res == PODS:
            uid = obj["metadata"]["uid"]
            worker = self.workers.get(uid)
            if etype == "DELETED":
                if worker is not None:
                    worker.gone()
                self._poke_all()  # resources freed: unschedulable pods may fit now
                return
            node = (obj.get("spec") or {}).get("nodeName")
            if node and node != self.config.node_name:
                return
            if worker is None:
                if obj["metadata"].get("deletionTimestamp") and not node:
                    return
                self.workers[uid] = PodWorker(self, obj)
            else:
                worker.update(obj)
        elif res in (SECRETS, CONFIGMAPS):
            self._poke_all()

    def _poke_all(self) -> None:
        for w in self.workers.values():
            w.poke.set()

    def used_resources(self, exclude: str) -> dict[str, Decimal]:
        used: dict[str, Decimal] = {"pods": Decimal(0)}
        for uid, w in self.workers.items():
            if uid == exclude or not w.scheduled or w.phase in TERMINAL:
                continue
            used["pods"] += 1
            for k, v in pod_requests(w.pod).items():
                used[k] = used.get(k, Decimal(0)) + v
        return used

    def lookup(self, res):
        def get(ns: str, name: str) -> dict | None:
            return self.store.try_get(res, ns, name)
        return get


class PodWorker:
    """Drives one pod from scheduling to removal."""

    def __init__(self, kubelet: Kubelet, pod: dict) -> None:
        self.k = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.uid, self.ns, self.name = meta["uid"], meta["namespace"], meta["name"]
        spec = pod.get("spec") or {}
        self.restart_policy = spec.get("restartPolicy") or "Always"
        self.scheduled = bool(spec.get("nodeName"))
        self.phase = (pod.get("status") or {}).get("phase") or "Pending"
        self.conditions: list[dict] = list((pod.get("status") or {}).get("conditions") or [])
        self.init_statuses = [initial_status(c) for c in spec.get("initContainers") or []]
        for cs in self.init_statuses:
            cs["state"] = waiting("PodInitializing")
        first = "PodInitializing" if self.init_statuses else "ContainerCreating"
        self.statuses = [initial_status(c) for c in spec.get("containers") or []]
        for cs in self.statuses:
            cs["state"] = waiting(first)
        self.pod_ip: str | None = None
        self.start_time: str | None = None
        self.sandbox_ready = False
        self.init_done = not self.init_statuses
        self.init_failed = False
        self.running: dict[str, Container] = {}
        self.side_tasks: list[asyncio.Task] = []
        self.poke = asyncio.Event()
        self.ending = asyncio.Event()
        self.removed = False
        self.reason: str | None = None  # pod-level status reason/message (DeadlineExceeded)
        self.message: str | None = None
        self.lifecycle: asyncio.Task | None = None
        self.task = asyncio.ensure_future(self.run())

    # --- notifications ---

    def update(self, pod: dict) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.ending.set()

    def gone(self) -> None:
        self.removed = True
        self.ending.set()

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

    def _finish(self) -> None:
        self.k.ips.release(self.pod_ip, self.uid)
        self.k.workers.pop(self.uid, None)
        shutil.rmtree(pod_dir(self.k.state_dir, self.pod), ignore_errors=True)
        shutil.rmtree(self._volume_dir(), ignore_errors=True)
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
        if not self.running:
            return
        if self.k.closing:
            self.removed = True  # nothing is written to the store any more
        names = list(self.running)
        for name in names:
            self._event("Normal", "Killing", f"Stopping container {name}", name)
        results = await asyncio.gather(
            *(self.k.runtime.stop(self.running[n], grace) for n in names), return_exceptions=True)
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
        if not self.scheduled:
            await self._schedule()
        self.pod_ip = self.k.ips.allocate(self.uid)
        self.start_time = rfc3339()
        deadline = (self.pod.get("spec") or {}).get("activeDeadlineSeconds")
        if deadline is not None:
            self.side_tasks.append(asyncio.ensure_future(self._deadline(float(deadline))))
        self._push()
        volumes = await self._prepare_volumes()
        self.sandbox_ready = True
        self._push()
        spec = self.pod.get("spec") or {}
        for i, c in enumerate(spec.get("initContainers") or []):
            cs = self.init_statuses[i]
            if c.get("restartPolicy") == "Always":  # a native sidecar: started, not awaited
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
                return
        self.init_done = True
        for cs in self.statuses:
            if cs["state"].get("waiting", {}).get("reason") == "PodInitializing":
                cs["state"] = waiting("ContainerCreating")
        self._push()
        await asyncio.gather(*(self._supervise(c, self.statuses[i], volumes, self.restart_policy,
                                               False)
                               for i, c in enumerate(spec.get("containers") or [])))
        # all containers are done for good: sidecars end with them
        for t in self.side_tasks:
            t.cancel()
        await asyncio.gather(*self.side_tasks, return_exceptions=True)
        self.side_tasks.clear()
        await self._kill_all(float((self.pod.get("spec") or {}).get(
            "terminationGracePeriodSeconds", 30)))
        self.k.ips.release(self.pod_ip, self.uid)
        self._push()

    async def _deadline(self, seconds: float) -> None:
        """activeDeadlineSeconds of the pod itself: its containers are killed, it fails."""
        await asyncio.sleep(seconds)
        if self.phase in TERMINAL:
            return
        self.lifecycle.cancel()
        await asyncio.gather(self.lifecycle, return_exceptions=True)
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

    async def _schedule(self) -> None:
        last = None
        while True:
            msg = unschedulable_message(self.pod, self.k.allocatable,
                                        self.k.used_resources(self.uid))
            if msg is None:
                break
            if msg != last:
                set_condition(self.conditions, "PodScheduled", "False", "Unschedulable", msg)
                self._push(scheduled=False)
                self.k.events.record(self.pod, "Warning", "FailedScheduling", msg,
                                     component="default-scheduler")
                last = msg
            await self._wait_poke(self.k.config.retry_interval * 5)
        node = self.k.config.node_name

        def bind(obj: dict) -> None:
            if obj["metadata"]["uid"] == self.uid:
                obj.setdefault("spec", {})["nodeName"] = node
        self.pod = self.k.store.mutate(PODS, self.ns, self.name, bind)
        self.scheduled = True
        set_condition(self.conditions, "PodScheduled", "True")
        self.k.events.record(self.pod, "Normal", "Scheduled",
                             f"Successfully assigned {self.ns}/{self.name} to {node}",
                             component="default-scheduler")

    async def _prepare_volumes(self) -> dict[str, Volume]:
        backoff = Backoff(self.k.config.backoff_initial, self.k.config.retry_interval * 4)
        while True:
            try:
                return prepare_volumes(self._pod_view(), self._volume_dir(), self.k.state_dir,
                                       self.k.lookup(SECRETS), self.k.lookup(CONFIGMAPS))
            except MountError as e:
                self._event("Warning", "FailedMount", str(e))
            await self._wait_poke(backoff.next())

    async def _container_spec(self, c: dict, cs: dict, volumes: dict[str, Volume],
                              restart: int) -> ContainerSpec:
        """Resolve the image and configuration; waits (with back-off) until both work."""
        image_ref = c.get("image", "")
        name = c["name"]
        backoff = Backoff(self.k.config.backoff_initial, self.k.config.backoff_max)
        pulled = False
        while True:
            try:
                image = self.k.registry.resolve(image_ref)
            except InvalidImageName as e:
                self._waiting(cs, "InvalidImageName", str(e))
                self._event("Warning", "InspectFailed", str(e), name)
                self._event("Warning", "Failed", "Error: InvalidImageName", name)
                await asyncio.sleep(backoff.next())
                continue
            except ImageNotFound as e:
                self._event("Normal", "Pulling", f'Pulling image "{image_ref}"', name)
                self._waiting(cs, "ErrImagePull", str(e))
                self._event("Warning", "Failed", f'Failed to pull image "{image_ref}": {e}', name)
                self._event("Warning", "Failed", "Error: ErrImagePull", name)
                await asyncio.sleep(backoff.next())
                msg = f'Back-off pulling image "{image_ref}"'
                self._waiting(cs, "ImagePullBackOff", msg)
                self._event("Normal", "BackOff", msg, name)
                self._event("Warning", "Failed", "Error: ImagePullBackOff", name)
                await asyncio.sleep(backoff.next())
                continue
            if not pulled:
                self._event("Normal", "Pulled", f'Container image "{image_ref}" already present '
                                                f"on machine", name)
                pulled = True
            cs["imageID"] = image.image_id
            try:
                view = self._pod_view()
                env = build_env(view, c, image, self.k.lookup(SECRETS), self.k.lookup(CONFIGMAPS),
                                self.k.allocatable)
                ident = identity(view, c, image)
                argv = build_argv(c, image, env)
                mounts = container_mounts(view, c, volumes, env)
            except (ConfigError, OSError) as e:
                self._waiting(cs, "CreateContainerConfigError", str(e))
                self._event("Warning", "Failed", f"Error: {e}", name)
                await self._wait_poke(backoff.next())
                continue
            return ContainerSpec(
                id=pysecrets.token_hex(32), argv=argv, env=env,
                log_path=log_file(self.k.state_dir, self.pod, name, restart),
                cwd=c.get("workingDir") or image.workdir, mounts=mounts, uid=ident.uid,
                gid=ident.gid, groups=ident.groups, root_readonly=ident.root_readonly,
                no_new_privs=ident.no_new_privs, capabilities=ident.capabilities,
                memory_limit=memory_limit(c), cpu_limit_millis=cpu_limit_millis(c))

    async def _supervise(self, c: dict, cs: dict, volumes: dict[str, Volume], policy: str,
                         is_init: bool, started: asyncio.Event | None = None) -> int:
        """Run one container, restarting it per policy; returns its final exit code."""
        name = c["name"]
        backoff = Backoff(self.k.config.backoff_initial, self.k.config.backoff_max)
        while True:
            spec = await self._container_spec(c, cs, volumes, cs["restartCount"])
            try:
                handle = await self.k.runtime.start(spec)
            except CreateContainerError as e:
                self._waiting(cs, "CreateContainerError", str(e))
                self._event("Warning", "Failed", f"Error: {e}", name)
                await asyncio.sleep(backoff.next())
                continue
            self.running[name] = handle
            cs["containerID"] = f"local://{spec.id}"
            cs["state"] = {"running": {"startedAt": rfc3339(handle.started_at)}}
            cs["started"] = True
            cs["ready"] = not is_init
            self._event("Normal", "Created", f"Created container {name}", name)
            self._event("Normal", "Started", f"Started container {name}", name)
            self._push()
            if started is not None:
                started.set()
            st = await self.k.runtime.wait(handle)
            if self.running.get(name) is not handle:
                return st.exit_code  # stopped by _kill_all, which records the status
            del self.running[name]
            self._set_terminated(cs, handle, st)
            if st.reason == "StartError":
                self._event("Warning", "Failed", f"Error: failed to start container \"{name}\": "
                                                 f"{st.message}", name)
            restart = policy == "Always" or (policy == "OnFailure" and st.exit_code != 0)
            if not restart:
                self._push()
                return st.exit_code
            delay = backoff.next()
            cs["lastState"] = {"terminated": cs["state"]["terminated"]}
            cs["state"] = waiting(
                "CrashLoopBackOff", f"back-off {delay:g}s restarting failed container={name} "
                                    f"pod={self.name}_{self.ns}({self.uid})")
            self._event("Warning", "BackOff", f"Back-off restarting failed container {name} in "
                                              f"pod {self.name}_{self.ns}({self.uid})", name)
            self._push()
            await asyncio.sleep(delay)
            cs["restartCount"] += 1

    # --- status ---

    def _status_of(self, name: str) -> dict | None:
        for cs in self.statuses + self.init_statuses:
            if cs["name"] == name:
                return cs
        return None

    def _set_terminated(self, cs: dict, handle: Container, st: ExitStatus) -> None:
        term = {"exitCode": st.exit_code, "reason": st.reason,
                "startedAt": rfc3339(st.started_at), "finishedAt": rfc3339(st.finished_at),
                "containerID": cs.get("containerID")}
        if st.message:
            term["message"] = st.message
        if st.signal:
            term["signal"] = st.signal
        cs["state"] = {"terminated": term}
        cs["ready"] = False
        cs["started"] = False

    def _waiting(self, cs: dict, reason: str, message: str | None) -> None:
        cs["state"] = waiting(reason, message)
        cs["ready"] = False
        self._push()

    def _event(self, etype: str, reason: str, message: str, container: str | None = None) -> None:
        path = None
        if container is not None:
            kind = "initContainers" if any(cs["name"] == container
                                           for cs in self.init_statuses) else "containers"
            path = f"spec.{kind}{{{container}}}"
        self.k.events.record(self.pod, etype, reason, message, field_path=path)

    def _event_pod(self, etype: str, reason: str, message: str) -> None:
        self.k.events.record(self.pod, etype, reason, message)

    def _status(self) -> dict:
        if self.phase not in TERMINAL:
            self.phase = pod_phase(self.restart_policy, self.init_done, self.init_failed,
                                   self.statuses)
        status: dict = {"phase": self.phase}
        if self.reason:
            status["reason"], status["message"] = self.reason, self.message
        if not self.scheduled:
            status["conditions"] = [dict(c) for c in self.conditions]
            return status
        self.conditions = pod_conditions(self.conditions, self.phase, self.sandbox_ready,
                                         self.init_done, self.init_statuses, self.statuses)
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

    def _push(self, scheduled: bool = True) -> None:
        status = self._status()

        def fn(obj: dict) -> None:
            if obj["metadata"]["uid"] == self.uid:  # not a new pod of the same name
                obj["status"] = {**(obj.get("status") or {}), **status}
        try:
            pod = self.k.store.mutate(PODS, self.ns, self.name, fn)
            if pod["metadata"]["uid"] == self.uid:
                self.pod = pod
        except ApiError as e:
            if e.code != 404:
                raise
