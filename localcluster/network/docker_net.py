"""Pod networks in docker mode: a sandbox container per pod, on the Docker networks its
NetworkPolicies allow (the plan: `localcluster.network.docker_net_plan`).

``setup(uid, host_network, pod)`` makes the pod's sandbox (the ``localcluster/pause`` image, see
`docker_images.pause_image`) on the pod's home network, connects it to the other networks of the
plan with the pod's Service aliases, and starts it; the pod's containers join its network
namespace (``netns = "container:<sandbox id>"``, read by `runtime.docker`). Pod IP = the sandbox's
address on its home network. Every change of pods, NetworkPolicies, Services or Namespaces
re-plans all running sandboxes (connect/disconnect, networks made and removed as needed) and
their Service ClusterIP rules (`docker_services`: kube-proxy's DNAT, in each sandbox). The
open pods' ``default`` network is made at start and kept: its gateway (``gateway``, also in
`describe`) is the host's address for pods whose egress is open (e.g. to reach the API server). A pod
whose policies cannot be translated raises `NetworkPolicyUnsupported` (the kubelet reports it and
does not start the pod); a running pod whose policies become untranslatable keeps only its home
network.

The Docker networks themselves (subnets, bridges, the iptables chains of their flows) are
`docker_networks.NetworkPool`'s; `docker_firewall` also keeps pods on internal networks from
reaching the host itself.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Callable
from dataclasses import dataclass, field

from localcluster.network.docker_firewall import add_host_guard, check_bridge_filtering
from localcluster.network.docker_networks import NetworkPool
from localcluster.runtime.docker_client import LABEL, AsyncDocker, DockerError, SyncDocker
from localcluster.runtime.docker_images import pause_image
from localcluster.network.docker_net_plan import PodInfo, PodPlan, PolicyUnsupported, plan
from localcluster.network.docker_services import Endpoint, apply_nat, nat_rules
from localcluster.network.netns import NetworkError, PodNet
from localcluster.apiserver.resources import NAMESPACES, NETWORKPOLICIES, PODS, SERVICES
from localcluster.runtime.docker import OWNER_LABEL, POD_LABEL, owner_id

log = logging.getLogger(__name__)
HOST_IP = "127.0.0.1"
DNS_UPSTREAM = "127.0.0.1"


class NetworkPolicyUnsupported(NetworkError):
    """The pod's NetworkPolicies cannot be enforced in docker mode."""


@dataclass
class Sandbox:
    uid: str
    pod: dict
    engine_id: str
    home: str = ""  # the network of the pod IP
    ip: str = ""
    networks: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> aliases
    ips: dict[str, str] = field(default_factory=dict)  # network name -> its address there
    pid: int = 0  # the sandbox's process (its network namespace), for the Service rules
    nat: tuple | None = None  # the Service rules last set in it (docker_services)


def _pod_info(pod: dict) -> PodInfo:
    meta = pod["metadata"]
    ports = {p["name"]: int(p["containerPort"])
             for c in (pod.get("spec") or {}).get("containers") or []
             for p in c.get("ports") or [] if p.get("name") and p.get("containerPort")}
    return PodInfo(uid=meta["uid"], name=meta["name"], namespace=meta["namespace"],
                   labels=dict(meta.get("labels") or {}), ports=ports)


class DockerNetwork:
    mode = "docker"

    def __init__(self, cluster: str, client: AsyncDocker | None = None,
                 sync: SyncDocker | None = None) -> None:
        self.cluster = cluster
        self.owner = owner_id()
        self.client = client or AsyncDocker()
        self.sync = sync or SyncDocker()
        self.store = None
        self.events = None
        # told (pod uid, new IP) when a pod's policies moved it to another network
        self.on_ip_change: Callable[[str, str], None] | None = None
        self.sandboxes: dict[str, Sandbox] = {}
        self.pool = NetworkPool(cluster, self.owner, self.client, self.sync)
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task] = set()
        self._warned: set[tuple[str, str]] = set()
        self._dirty: asyncio.Task | None = None
        self._stale = False
        try:
            self.pause = pause_image(self.sync)
        except DockerError as e:
            raise NetworkError(f"cannot make the pods' sandbox image: {e.message}") from e
        check_bridge_filtering()
        self.subnet = self.pool.make_default()
        self.gateway = str(self.subnet.network_address + 1)
        try:
            add_host_guard(cluster)
        except NetworkError:
            self.close()
            raise

    # --- wiring ---

    def attach(self, store, events) -> None:
        """The kubelet's store (policies, services, namespaces) and event recorder."""
        self.store, self.events = store, events
        store.subscribe(self._on_change)

    def _on_change(self, etype: str, res, obj: dict) -> None:
        if res in (NETWORKPOLICIES, SERVICES, NAMESPACES) or (
                res == PODS and obj["metadata"]["uid"] in self.sandboxes):
            if res == PODS and etype != "DELETED":
                sb = self.sandboxes[obj["metadata"]["uid"]]
                if (sb.pod["metadata"].get("labels") or {}) == \
                        (obj["metadata"].get("labels") or {}):
                    return
                sb.pod = obj
            self._stale = True
            if self._dirty is None or self._dirty.done():
                self._dirty = self._spawn(self._reconcile_locked())

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    # --- planning ---

    def _plan(self, extra: dict | None = None) -> dict:
        pods = [sb.pod for sb in self.sandboxes.values()] + ([extra] if extra else [])
        if self.store is None:
            policies, services, nss = [], [], []
        else:
            policies = self.store.list(NETWORKPOLICIES)[0]
            services = self.store.list(SERVICES)[0]
            nss = self.store.list(NAMESPACES)[0]
        ns_labels = {n["metadata"]["name"]: dict(n["metadata"].get("labels") or {}) for n in nss}
        return plan([_pod_info(p) for p in pods], policies, services, ns_labels)

    def _name(self, key: str) -> str:
        return self.pool.name(key)

    def _warn(self, pod: dict, reason: str, message: str) -> None:
        key = (pod["metadata"]["uid"], message)
        if key in self._warned or self.events is None:
            return
        self._warned.add(key)
        self.events.record(pod, "Warning", reason, message)

    # --- the kubelet's interface ---

    async def setup(self, uid: str, host_network: bool = False,
                    pod: dict | None = None) -> PodNet:
        if host_network:
            return PodNet(HOST_IP)
        if uid in self.sandboxes:
            sb = self.sandboxes[uid]
            return PodNet(sb.ip, f"container:{sb.engine_id}")
        assert pod is not None, "docker pod networks need the pod"
        async with self._lock:
            plans = self._plan(pod)
            mine = plans[uid]
            if isinstance(mine, PolicyUnsupported):
                raise NetworkPolicyUnsupported(str(mine))
            sb = await self._make_sandbox(pod, mine)
            self.sandboxes[uid] = sb
            try:
                await self._apply(plans, strict=uid)
            except BaseException:
                await asyncio.shield(self._remove_sandbox(uid))
                raise
            return PodNet(sb.ip, f"container:{sb.engine_id}")

    async def _make_sandbox(self, pod: dict, pp: PodPlan) -> Sandbox:
        meta = pod["metadata"]
        home = await self.pool.ensure(pp.home.key, pp.home.internal)
        body = {
            "Image": self.pause, "Hostname": meta["name"][:63],
            "Labels": {LABEL: self.cluster, OWNER_LABEL: self.owner, POD_LABEL: meta["uid"],
                       "localcluster.pod": f"{meta['namespace']}/{meta['name']}",
                       "localcluster.role": "sandbox"},
            # Docker's embedded DNS answers the Service names; what it does not know it would
            # forward to the host's nameservers: pods get the host's loopback instead (nothing
            # leaves the machine, an unknown name fails at once)
            "HostConfig": {"NetworkMode": home, "CapDrop": ["ALL"], "ReadonlyRootfs": True,
                           "SecurityOpt": ["no-new-privileges"], "Init": False,
                           "Dns": [DNS_UPSTREAM], "DnsOptions": ["timeout:1", "attempts:1"]},
            "NetworkingConfig": {"EndpointsConfig": {home: {"Aliases": list(pp.aliases)}}},
        }
        try:
            created = await self.client.request(
                "POST", "/containers/create", {"name": f"lc-{self.cluster}-sb-{meta['uid'][:18]}"},
                body=body)
        except DockerError as e:
            raise NetworkError(f"cannot create the pod sandbox: {e.message}") from e
        sb = Sandbox(uid=meta["uid"], pod=pod, engine_id=created["Id"], home=home,
                     networks={home: pp.aliases})
        try:
            await self.client.request("POST", f"/containers/{sb.engine_id}/start")
            info = await self.client.request("GET", f"/containers/{sb.engine_id}/json")
        except DockerError as e:
            with contextlib.suppress(DockerError):
                await self.client.request("DELETE", f"/containers/{sb.engine_id}",
                                          {"force": True})
            raise NetworkError(f"cannot start the pod sandbox: {e.message}") from e
        sb.ip = info["NetworkSettings"]["Networks"][home]["IPAddress"]
        return sb

    async def _apply(self, plans: dict, strict: str | None = None) -> None:
        """Connect/disconnect every sandbox per plan; remove networks nobody uses. An engine
        error fails the sandbox `strict` (the one being set up); others are logged."""
        for uid, sb in list(self.sandboxes.items()):
            try:
                await self._apply_one(sb, plans.get(uid))
            except (DockerError, NetworkError) as e:
                why = e.message if isinstance(e, DockerError) else str(e)
                if uid == strict:
                    raise NetworkError(f"cannot connect the pod sandbox: {why}") from e
                log.warning("cannot update the networks of pod %s: %s",
                            sb.pod["metadata"]["name"], why)
        await self._apply_flows(plans)
        used = {n for sb in self.sandboxes.values() for n in sb.networks}
        await self.pool.remove_unused(used)

    async def _apply_flows(self, plans: dict) -> None:
        """Let through, on each internal network, exactly the flows the plans allow."""
        for sb in self.sandboxes.values():
            try:
                info = await self.client.request("GET", f"/containers/{sb.engine_id}/json")
            except DockerError:
                continue
            nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
            sb.ips = {n: v.get("IPAddress") for n, v in nets.items() if v.get("IPAddress")}
            sb.pid = int((info.get("State") or {}).get("Pid") or 0)
            if not sb.ip and sb.ips.get(sb.home):  # moved to another home network
                sb.ip = sb.ips[sb.home]
                if self.on_ip_change is not None:
                    self.on_ip_change(sb.uid, sb.ip)
        flows: dict[str, list] = {name: [] for name in self.pool.bridges}
        for uid, pp in plans.items():
            dst = self.sandboxes.get(uid)
            if dst is None or not isinstance(pp, PodPlan):
                continue
            for key, src_uid, ports in pp.inbound:
                name, src = self._name(key), self.sandboxes.get(src_uid)
                if name in flows and src is not None and src.ips.get(name) and \
                        dst.ips.get(name):
                    flows[name].append((src.ips[name], dst.ips[name], ports))
        for name, wanted in flows.items():
            self.pool.set_flows(name, wanted)
        await self._apply_service_nat()

    async def _apply_service_nat(self) -> None:
        """ClusterIPs reachable from every pod, as kube-proxy makes them (docker_services)."""
        services = self.store.list(SERVICES)[0] if self.store is not None else []
        eps = [Endpoint(uid=sb.uid, namespace=sb.pod["metadata"]["namespace"],
                        labels=dict(sb.pod["metadata"].get("labels") or {}),
                        ports=_pod_info(sb.pod).ports, ips=dict(sb.ips))
               for sb in self.sandboxes.values()]
        for uid, rules in nat_rules(eps, services).items():
            sb = self.sandboxes.get(uid)
            if sb is None or not sb.pid or sb.nat == rules:
                continue
            if await asyncio.to_thread(apply_nat, sb.pid, rules):
                sb.nat = rules

    async def _apply_one(self, sb: Sandbox, pp: PodPlan | PolicyUnsupported | None) -> None:
        if pp is None:
            return
        if isinstance(pp, PolicyUnsupported):
            self._warn(sb.pod, "NetworkPolicyUnsupported",
                       f"{pp}; the running pod keeps only its own network")
            want = {sb.home: sb.networks.get(sb.home, ())}
        else:
            for w in pp.warnings:
                self._warn(sb.pod, "ServicePortUnsupported", w)
            want = {}
            for key, net in pp.networks.items():
                want[await self.pool.ensure(key, net.internal)] = pp.aliases
            home = self._name(pp.home.key)
            if home != sb.home:
                # its policies changed what the pod may reach: enforced now, at the price of
                # its pod IP, which changes (the kubelet writes the new one to the pod's status;
                # a POD_IP taken from the downward API by running containers is stale)
                self._warn(sb.pod, "PodNetworkChanged",
                           f"the pod's NetworkPolicies moved it to network {home}: its pod IP "
                           f"{sb.ip} changes (containers that read POD_IP at start keep the old one)")
                sb.home, sb.ip = home, ""  # the new one is read back below
        for name, aliases in list(sb.networks.items()):
            if want.get(name) != aliases:
                with contextlib.suppress(DockerError):
                    await self.client.request("POST", f"/networks/{name}/disconnect",
                                              body={"Container": sb.engine_id, "Force": True})
                del sb.networks[name]
        for name, aliases in want.items():
            if name not in sb.networks:
                endpoint: dict = {"Aliases": list(aliases)}
                if name == sb.home and sb.ip:  # re-joined (new aliases): the pod keeps its IP
                    endpoint["IPAMConfig"] = {"IPv4Address": sb.ip}
                await self.client.request(
                    "POST", f"/networks/{name}/connect",
                    body={"Container": sb.engine_id, "EndpointConfig": endpoint})
                sb.networks[name] = aliases

    async def _reconcile_locked(self) -> None:
        while self._stale:  # changes made while planning are planned again
            self._stale = False
            async with self._lock:
                await self._reconcile()

    async def _reconcile(self) -> None:
        for sb in self.sandboxes.values():
            if self.store is not None:  # current labels
                meta = sb.pod["metadata"]
                fresh = self.store.try_get(PODS, meta["namespace"], meta["name"])
                if fresh is not None and fresh["metadata"]["uid"] == sb.uid:
                    sb.pod = fresh
        try:
            await self._apply(self._plan())
        except (DockerError, NetworkError) as e:
            log.warning("cannot update pod networks: %s", e)

    async def _remove_sandbox(self, uid: str) -> None:
        sb = self.sandboxes.pop(uid, None)
        if sb is not None:
            with contextlib.suppress(DockerError):
                await self.client.request("DELETE", f"/containers/{sb.engine_id}",
                                          {"force": True})

    def finished(self, uid: str) -> None:
        """Kept until the pod is deleted (`release`), as the isolated network does."""

    def release(self, uid: str) -> None:
        if uid in self.sandboxes:
            self._spawn(self._release(uid))

    async def _release(self, uid: str) -> None:
        async with self._lock:
            await self._remove_sandbox(uid)
            try:
                await self._apply(self._plan())
            except (DockerError, NetworkError) as e:
                log.warning("cannot update pod networks: %s", e)

    async def drain(self) -> None:
        if self.store is not None:
            self.store.unsubscribe(self._on_change)
            self.store = None
        for uid in list(self.sandboxes):
            self.release(uid)
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        await self.client.close()

    def close(self) -> None:
        """Remove every container and network of this cluster (idempotent, synchronous)."""
        with contextlib.suppress(DockerError):
            for c in self.sync.request("GET", "/containers/json",
                                       {"all": True, "filters": {"label": [
                                           f"{LABEL}={self.cluster}"]}}) or []:
                with contextlib.suppress(DockerError):
                    self.sync.request("DELETE", f"/containers/{c['Id']}", {"force": True})
        self.pool.close()
        self.sandboxes.clear()

    def describe(self) -> dict:
        return {"mode": "docker", "cluster": self.cluster, "subnet": str(self.subnet),
                "gateway": self.gateway}
