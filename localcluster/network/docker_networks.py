"""The Docker networks of one cluster: made with a subnet of `POD_CIDR` each, internal ones on
bridges named ``lc<cluster>i<n>`` whose traffic is limited to the flows the plan allows
(`docker_firewall`), removed when no pod uses them (except ``default``)."""
from __future__ import annotations

import contextlib
import ipaddress

from localcluster.runtime.docker_client import LABEL, AsyncDocker, DockerError, SyncDocker
from localcluster.network.docker_firewall import cleanup_host_guards, remove_flows, set_flows
from localcluster.network.netns_plan import NetworkError
from localcluster.runtime.docker import OWNER_LABEL

# Networks get their subnets here (not from the engine's small default pools, ~30 networks),
# so a pod's home network can be re-joined with the same pod IP; beside the isolated pod
# network's 10.244.0.0/16
POD_CIDR = ipaddress.ip_network("10.245.0.0/16")
SUBNET_PREFIX = 24


def _ipam(subnet: ipaddress.IPv4Network) -> dict:
    return {"Driver": "default", "Config": [
        {"Subnet": str(subnet), "Gateway": str(subnet.network_address + 1)}]}


def _subnets(cidr: ipaddress.IPv4Network, prefix: int, start: int):
    """The /prefix subnets of cidr, round robin from the one holding address ``start``."""
    subs = list(cidr.subnets(new_prefix=prefix))
    first = next((i for i, sn in enumerate(subs) if int(sn.network_address) >= start), 0)
    return subs[first:] + subs[:first]


class NetworkPool:
    def __init__(self, cluster: str, owner: str, client: AsyncDocker, sync: SyncDocker) -> None:
        self.cluster, self.owner, self.client, self.sync = cluster, owner, client, sync
        self.networks: dict[str, str] = {}  # name -> id
        self.bridges: dict[str, str] = {}  # internal network name -> its bridge
        self._flows: dict[str, list] = {}  # internal network name -> flows in force
        self._bridge_n = 0
        self._next_subnet = 0  # where the search for a free subnet starts (round robin)

    def name(self, key: str) -> str:
        return f"lc-{self.cluster}-{key}"

    def _network_body(self, name: str, internal: bool) -> dict:
        body = {"Name": name, "Driver": "bridge", "Internal": internal, "CheckDuplicate": True,
                "Labels": {LABEL: self.cluster, OWNER_LABEL: self.owner}}
        if internal:
            self._bridge_n += 1
            body["Options"] = {"com.docker.network.bridge.name":
                               f"lc{self.cluster}i{self._bridge_n}"}
        return body

    def _bridge(self, body: dict) -> str | None:
        return (body.get("Options") or {}).get("com.docker.network.bridge.name")

    def _candidates(self, listing: list[dict] | None):
        """Free subnets (not used by any Docker network), round robin."""
        used = []
        for n in listing or []:
            for cfg in ((n.get("IPAM") or {}).get("Config") or []):
                with contextlib.suppress(ValueError, KeyError):
                    used.append(ipaddress.ip_network(cfg["Subnet"], strict=False))
        for subnet in _subnets(POD_CIDR, SUBNET_PREFIX, self._next_subnet):
            if not any(subnet.version == u.version and subnet.overlaps(u) for u in used):
                yield subnet

    def _made(self, name: str, created: dict, subnet: ipaddress.IPv4Network) -> str:
        self._next_subnet = int(subnet.network_address) + subnet.num_addresses
        self.networks[name] = created["Id"]
        return name

    async def ensure(self, key: str, internal: bool) -> str:
        name = self.name(key)
        if name in self.networks:
            return name
        body = self._network_body(name, internal)
        bridge = self._bridge(body)
        if bridge:  # nothing passes before the network's flows are known
            set_flows(bridge, self.cluster, [])
        for subnet in self._candidates(await self.client.request("GET", "/networks")):
            body["IPAM"] = _ipam(subnet)
            try:
                created = await self.client.request("POST", "/networks/create", body=body)
            except DockerError as e:
                if "overlap" in e.message:  # taken meanwhile (another cluster): the next one
                    continue
                if bridge:
                    remove_flows(bridge, self.cluster)
                raise NetworkError(f"cannot create Docker network {name}: {e.message}") from e
            if bridge:
                self.bridges[name] = bridge
            return self._made(name, created, subnet)
        raise NetworkError(f"no free /{SUBNET_PREFIX} left in {POD_CIDR} for Docker network "
                           f"{name}")

    def make_default(self) -> ipaddress.IPv4Network:
        """The open pods' network, made at once: its gateway is where pods reach the host."""
        name = self.name("default")
        body = self._network_body(name, False)
        try:
            for subnet in self._candidates(self.sync.request("GET", "/networks")):
                body["IPAM"] = _ipam(subnet)
                try:
                    created = self.sync.request("POST", "/networks/create", body=body)
                except DockerError as e:
                    if "overlap" in e.message:
                        continue
                    raise
                self._made(name, created, subnet)
                return subnet
        except DockerError as e:
            raise NetworkError(f"cannot create Docker network {name}: {e.message}") from e
        raise NetworkError(f"no free /{SUBNET_PREFIX} left in {POD_CIDR} for {name}")

    async def remove_unused(self, used: set[str]) -> None:
        used = used | {self.name("default")}  # kept: its gateway is the host's address for pods
        for name in [n for n in self.networks if n not in used]:
            with contextlib.suppress(DockerError):
                await self.client.request("DELETE", f"/networks/{name}")
            self.networks.pop(name, None)
            bridge = self.bridges.pop(name, None)
            if bridge:
                remove_flows(bridge, self.cluster)
                self._flows.pop(name, None)

    def set_flows(self, name: str, flows: list) -> None:
        if self._flows.get(name) != flows:
            set_flows(self.bridges[name], self.cluster, flows)
            self._flows[name] = flows

    def close(self) -> None:
        """Remove every network of the cluster and their rules (synchronous)."""
        with contextlib.suppress(DockerError):
            for n in self.sync.request("GET", "/networks", {"filters": {"label": [
                    f"{LABEL}={self.cluster}"]}}) or []:
                with contextlib.suppress(DockerError):
                    self.sync.request("DELETE", f"/networks/{n['Id']}")
        for bridge in self.bridges.values():
            remove_flows(bridge, self.cluster)
        cleanup_host_guards(self.cluster)
        self.bridges.clear()
        self._flows.clear()
        self.networks.clear()
