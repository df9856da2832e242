"""The kubelet of the single node ``localcluster``.

At start it registers its Node (`nodestatus.new_node`: capacity/allocatable from
``KubeletConfig.allocatable``, conditions, nodeInfo, addresses, labels) and renews it every
``node_status_interval`` seconds (lastHeartbeatTime). It runs only the pods bound to its node
(``spec.nodeName``): the scheduler (`localcluster.controllers.scheduler`) binds them. For every
such pod it gives it its network (`localcluster.network.netns`: a loopback pod IP 127.0.1.x on
the host's network, or its own isolated namespace), sets up its volumes (`kubelet_volumes`),
runs its init containers in order and then its containers through a `Runtime`, restarts them
per ``restartPolicy`` (back-off 1s, 2s, 4s… capped at 10s — shorter than a real kubelet's
10s…5min), and writes the pod status and core/v1 Events as a real kubelet does. A pod marked for
deletion gets SIGTERM, SIGKILL after its grace period, and is then removed from the store
(``delete(..., grace_period_seconds=0)``).

Runtimes: the process runtime (`runtime.process`, the default) or, in docker mode
(``serve --runtime docker``), `runtime.docker` with the pod network `docker_net` and images from
the local engine (`docker_images.DockerImages`) — given as ``KubeletConfig.runtime``/``images``/
``network``. The docker network also gets the store (NetworkPolicies, Services) and reports
policies it cannot enforce: such a pod does not start (Warning ``NetworkPolicyUnsupported``).

Fake pods: with the fake runtime (``serve --runtime fake``, `runtime.fake`) every pod, and with
images the registry marks ``fake`` every pod whose containers all have such images (live-channel
sidecars aside), is *fake*: its containers' specs carry `fake_spec.FakeInput` (name, the pod's
annotations, the image's defaults) and it gets a loopback IP of `network.loopback` instead of the
pod network. Everything else (status, probes, volumes, events, deletion) is as for any pod.

Logs: `read_log` (re-exported from `kubelet_logs`) serves ``pods/{name}/log``; files are kept until
the pod is deleted.

Modules: `kubelet_pod` (the per-pod worker), `kubelet_containers` (image, configuration, start,
restarts), `kubelet_spec` (pure: resources, env, argv, identity), `kubelet_status` (pure:
phase, conditions), `nodestatus` (pure: the Node object), `kubelet_volumes`, `kubelet_events`,
`kubelet_logs`.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from localcluster.network.docker_net import DockerNetwork, NetworkPolicyUnsupported
from localcluster.apiserver.incluster import InClusterAccess
from localcluster.kubelet.events import EventRecorder
from localcluster.kubelet.logs import LogError, read_log, resolve_log_path
from localcluster.kubelet.fit import matches_node, shortfalls
from localcluster.kubelet.nodestatus import heartbeat, new_node, node_labels
from localcluster.kubelet.pod import TERMINAL, PodWorker
from localcluster.kubelet.spec import (NODE_NAME, ConfigError, build_argv, parse_quantity,
                                       pod_requests)
from localcluster.network.loopback import LoopbackNetwork
from localcluster.network.netns import HostNetwork, IsolatedNetwork, NetworkError, PodNet
from localcluster.runtime.fake_spec import is_live_sidecar
from localcluster.runtime.registry import Registry, RegistryError
from localcluster.apiserver.errors import ApiError
from localcluster.apiserver.resources import CONFIGMAPS, NODES, PODS, SECRETS
from localcluster.apiserver.store import clone
from localcluster.runtime.base import ContainerSpec, Runtime

__all__ = ["Kubelet", "KubeletConfig", "read_log", "resolve_log_path", "LogError"]

log = logging.getLogger(__name__)


@dataclass
class KubeletConfig:
    node_name: str = NODE_NAME
    allocatable: dict[str, str] = field(default_factory=lambda: {
        "cpu": "64", "memory": "256Gi", "pods": "250", "ephemeral-storage": "1Ti"})
    backoff_initial: float = 1.0
    backoff_max: float = 10.0
    retry_interval: float = 2.0  # re-check of failed mounts
    # how often the Node's status is renewed (lastHeartbeatTime); a real kubelet reports every
    # 10s when something changed and every 5 min otherwise (it renews a Lease in between)
    node_status_interval: float = 60.0
    # None: the host's (localcluster.network.netns); docker mode: a docker_net.DockerNetwork
    network: HostNetwork | IsolatedNetwork | DockerNetwork | None = None
    # docker mode: the runtime and image source (docker_images.DockerImages) replace those
    # run_controllers passes (the process runtime and the YAML registry)
    runtime: Runtime | None = None
    images: object | None = None
    # In-cluster access (tokens, KUBERNETES_SERVICE_*; localcluster.apiserver.incluster); None: neither.
    incluster: InClusterAccess | None = None
    host_root: Path | None = None  # hostPath /x is host_root/x (the node's filesystem); None: /

    def allocatable_quantities(self) -> dict[str, Decimal]:
        return {k: parse_quantity(v) for k, v in self.allocatable.items()}



class Kubelet:
    def __init__(self, store, state_dir: Path, registry: Registry, runtime: Runtime,
                 config: KubeletConfig | None = None) -> None:
        self.store = store
        self.state_dir = Path(state_dir)
        self.config = config or KubeletConfig()
        self.registry = self.config.images or registry
        self.runtime = self.config.runtime or runtime
        self.allocatable = self.config.allocatable_quantities()
        self.network = self.config.network or HostNetwork()
        self.fake_network = LoopbackNetwork()  # fake pods' IPs (runtime.fake)
        self.events = EventRecorder(store, self.config.node_name)
        if hasattr(self.network, "attach"):  # the docker network reads policies and services
            self.network.attach(store, self.events)
            self.network.on_ip_change = self._pod_ip_changed
        self.worker_class = ImagePodWorker if hasattr(self.runtime, "runs_images") else PodWorker
        self.workers: dict[str, PodWorker] = {}
        self.closing = False
        self._node_task: asyncio.Task | None = None
        self._remover = ThreadPoolExecutor(1, thread_name_prefix="kubelet-rmtree")

    def start(self) -> None:
        self._register_node()
        self.store.subscribe(self._on_event, shared=True)  # read only
        for pod in self.store.list(PODS)[0]:
            self._on_event("ADDED", PODS, pod)
        self._node_task = asyncio.ensure_future(self._node_heartbeats())

    # --- the Node ---

    def _fresh_node(self) -> dict:
        runtime = getattr(self.runtime, "version_string", None) or \
            f"{type(self.runtime).__name__.removesuffix('Runtime').lower()}://localcluster"
        return new_node(self.config.node_name, self.config.allocatable, runtime)

    def _register_node(self) -> None:
        fresh = self._fresh_node()
        try:
            self.store.create(NODES, None, fresh)
        except ApiError as e:
            if e.code != 409:
                raise
            # registered before (the same name): the kubelet takes its node over again
            self.store.mutate(NODES, None, self.config.node_name,
                              lambda node: heartbeat(node, fresh))

    async def _node_heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.config.node_status_interval)
            fresh = self._fresh_node()
            try:
                self.store.mutate(NODES, None, self.config.node_name,
                                  lambda node: heartbeat(node, fresh))
            except ApiError as e:
                # as a real kubelet: a deleted Node is not registered again until a restart
                log.warning("cannot update the status of node %s: %s",
                            self.config.node_name, e.message)

    async def close(self) -> None:
        """Stop every pod's containers (SIGTERM, then SIGKILL) and all workers."""
        self.closing = True
        self.store.unsubscribe(self._on_event)
        if self._node_task is not None:
            self._node_task.cancel()
            await asyncio.gather(self._node_task, return_exceptions=True)
        workers = list(self.workers.values())
        for w in workers:
            w.task.cancel()
        await asyncio.gather(*(w.task for w in workers), return_exceptions=True)
        await self.runtime.close()
        await self.network.drain()
        await self.fake_network.drain()
        self._remover.shutdown(wait=True)  # the last removals: moments, and nothing runs now

    def remove_dirs(self, *dirs: Path) -> None:
        """Remove a finished pod's directories off the event loop: their names have the pod's
        uid, so nothing new can be in them, and removing them on the loop was a sixth of the
        stand-in's time when 1,000 pods ended at once."""
        for d in dirs:
            try:
                self._remover.submit(shutil.rmtree, d, ignore_errors=True)
            except RuntimeError:  # closed: a pod that ended while the kubelet stopped
                shutil.rmtree(d, ignore_errors=True)

    # --- store notifications (synchronous: only record and wake up) ---

    def _on_event(self, etype: str, res, obj: dict) -> None:
        if res == PODS:
            uid = obj["metadata"]["uid"]
            worker = self.workers.get(uid)
            if etype == "DELETED":
                if worker is not None:
                    worker.gone()
                return
            if (obj.get("spec") or {}).get("nodeName") != self.config.node_name:
                return  # not bound yet (the scheduler's), or another node's
            if worker is None:  # kept: a copy of the store's shared object
                self.workers[uid] = self.worker_class(self, clone(obj))
            else:
                worker.update(clone(obj))
        elif res in (SECRETS, CONFIGMAPS):
            for w in self.workers.values():  # a missing Secret/ConfigMap may exist now
                w.poke.set()

    def admit(self, worker: PodWorker) -> tuple[str, str] | None:
        """The kubelet's admission of a pod bound to it: None, or (reason, message) when the pod
        must not run here: its node selector/affinity does not match (NodeAffinity), or the node
        lacks what it requests next to the pods admitted before (OutOfcpu, OutOfnvidia.com/gpu,
        OutOfpods ...). Pods the scheduler bound always pass; pods created with spec.nodeName
        skip the scheduler and meet this."""
        node = self.store.try_get(NODES, None, self.config.node_name)
        labels = (node or {}).get("metadata", {}).get("labels") or node_labels(self.config.node_name)
        if not matches_node(worker.pod, labels):
            return "NodeAffinity", "Predicate NodeAffinity failed"
        try:
            requests = _requests(worker)
        except ValueError:
            return None  # the API server validated the quantities
        used: dict[str, Decimal] = {"pods": Decimal(0)}
        for w in self.workers.values():
            if w is worker or not w.admitted or w.phase in TERMINAL:
                continue
            used["pods"] += 1
            for k, v in _requests(w).items():
                used[k] = used.get(k, Decimal(0)) + v
        lacking = shortfalls(requests, self.allocatable, used)
        if not lacking:
            return None
        name = lacking[0]
        scale = 1000 if name == "cpu" else 1  # the kubelet counts cpu in millicores
        want = 1 if name == "pods" else requests.get(name, Decimal(0))
        amounts = [int(v * scale) for v in (want, used.get(name, Decimal(0)),
                                             self.allocatable.get(name, Decimal(0)))]
        return (f"OutOf{name}", f"Node didn't have enough resource: {name}, requested: "
                                f"{amounts[0]}, used: {amounts[1]}, capacity: {amounts[2]}")

    def _pod_ip_changed(self, uid: str, ip: str) -> None:
        """The docker network moved a running pod (new policies): its status shows the new IP,
        which the kubelet's probes use from now on."""
        worker = self.workers.get(uid)
        if worker is not None and not worker.removed:
            worker.pod_ip = ip
            worker._push()

    def fake_pod(self, worker: PodWorker) -> bool:
        """Whether the pod's containers are run by the fake runtime (see the module doc)."""
        mode = getattr(self.runtime, "fake_pods", None)
        if mode == "all":
            return True
        if mode != "images":
            return False
        spec = worker.pod.get("spec") or {}
        containers = [(c, True) for c in spec.get("initContainers") or []] + \
            [(c, False) for c in spec.get("containers") or []]
        for c, is_init in containers:
            try:
                image = self.registry.resolve(c.get("image", ""))
            except RegistryError:
                return False  # the process runtime's path reports the image's error
            if image.fake is not None:
                continue
            try:  # the node's live sidecar is hosted, not run, in a fake pod
                if is_init and is_live_sidecar(build_argv(c, image, {})):
                    continue
            except ConfigError:
                pass
            return False
        return True

    async def sandbox(self, worker: PodWorker) -> PodNet:
        """The pod's network (IP, namespace); retried with back-off as a kubelet retries a
        failed sandbox."""
        host_network = bool((worker.pod.get("spec") or {}).get("hostNetwork"))
        delay = self.config.backoff_initial
        while True:
            try:
                if worker.fake:
                    return await self.fake_network.setup(worker.uid, host_network)
                if self.network.mode == "docker":
                    return await self.network.setup(worker.uid, host_network, worker.pod)
                return await self.network.setup(worker.uid, host_network)
            except NetworkPolicyUnsupported as e:
                # not started: a policy that cannot be enforced is never silently ignored
                self.events.record(worker.pod, "Warning", "NetworkPolicyUnsupported",
                                   f"Pod not started: {e}")
            except NetworkError as e:
                self.events.record(worker.pod, "Warning", "FailedCreatePodSandBox",
                                   f"Failed to create pod sandbox: {e}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.backoff_max)

    def service_env(self, worker: PodWorker) -> dict[str, str]:
        """The ``kubernetes`` Service's variables for the worker's pod ({} without access)."""
        access = self.config.incluster
        return access.service_env(worker.pod) if access is not None else {}

    def lookup(self, res):
        def get(ns: str, name: str) -> dict | None:
            return self.store.try_get(res, ns, name)
        return get


class ImagePodWorker(PodWorker):
    """The pod worker for runtimes that run images (docker): each container's spec also names
    its image (the id resolved from the engine) and pod."""

    async def _container_spec(self, c: dict, cs: dict, *args, **kwargs) -> ContainerSpec:
        spec = await super()._container_spec(c, cs, *args, **kwargs)
        return self.k.runtime.runs_images(spec, self.pod, c, cs.get("imageID"))


def _requests(worker: PodWorker) -> dict[str, Decimal]:
    """The pod's requests, parsed once: a pod's resources do not change (no in-place resize
    here), and parsing every admitted pod's quantities for each new pod made admission O(pods)."""
    cached = getattr(worker, "_requests", None)
    if cached is None:
        cached = worker._requests = pod_requests(worker.pod)
    return cached
