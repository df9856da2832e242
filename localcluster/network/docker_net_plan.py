"""Pure part of the Docker pod network: NetworkPolicies and Services → the networks each pod joins.

Connectivity between Docker containers starts with "shares a network with": the plan gives every
pod a set of networks such that two pods share one only when NetworkPolicy allows traffic between
them (in at least one direction):
- a pod no policy isolates (no policy selects it for Ingress or Egress, or they allow everything)
  is *open*: it joins the cluster's ``default`` bridge network, shared by all open pods;
- any other pod gets its own *home* network (``h-<uid>``), ``internal`` (no way out of it) when its
  egress is restricted; its pod IP is its address there;
- for every pair of pods where A may reach B (A's egress allows B and B's ingress allows A, on
  the ports both allow), not both open: when B's home is internal, A joins it (so A reaches B at
  its pod IP, e.g. the node reaching a sidecar); otherwise both join an internal pair network
  ``p-<a>-<b>`` (B is reached by Service name there; its pod IP is on its home network).
A shared network alone would open every port, both ways: so each internal network also lets
through only its plan's flows (``PodPlan.inbound``: source, destination, ports; replies pass),
which `docker_firewall` enforces with iptables. Networks with more than one pod are internal,
except ``default``, where open pods may do anything anyway.

Docker's embedded DNS serves Service names: a pod gets network aliases ``svc``, ``svc.ns``,
``svc.ns.svc`` and ``svc.ns.svc.cluster.local`` for every Service selecting it, on each network
it joins. A Service whose ``port`` differs from its ``targetPort`` cannot be served that way (no
port mapping): it gets no aliases and a warning. Egress to the cluster DNS (kube-system on port
53, or any destination on port 53 only) needs no network: the embedded DNS answers inside the
pod. Shapes that cannot be translated raise `PolicyUnsupported` (the pod does not start):
``ipBlock`` peers, and egress rules without peers limited to ports other than 53 ("anything on
port N", which includes the world outside).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from localcluster.apiserver.selectors import LabelSelector

NS_NAME_LABEL = "kubernetes.io/metadata.name"
DNS_PORT = 53


class PolicyUnsupported(Exception):
    """A NetworkPolicy selecting the pod has a shape Docker networks cannot enforce."""


@dataclass(frozen=True)
class Peer:
    namespace: str  # the policy's namespace (a peer without namespaceSelector is there)
    ns_selector: LabelSelector | None
    pod_selector: LabelSelector | None

    def matches(self, pod: "PodInfo", ns_labels: dict[str, dict[str, str]]) -> bool:
        if self.ns_selector is None:
            if pod.namespace != self.namespace:
                return False
        elif not self.ns_selector.matches(_ns_labels(pod.namespace, ns_labels)):
            return False
        return self.pod_selector is None or self.pod_selector.matches(pod.labels)


@dataclass(frozen=True)
class PodInfo:
    uid: str
    name: str
    namespace: str
    labels: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)  # named container ports


# Ports a rule allows: entries (protocol, port, end port or None); port is a number or a
# container port's name (resolved against the destination pod). ANY_PORT: every port.
Ports = frozenset
ANY_PORT: Ports = frozenset({("*", None, None)})


def _ports(spec: list[dict] | None) -> Ports:
    if not spec:
        return ANY_PORT
    out = set()
    for p in spec:
        port = p.get("port")
        if port is None:
            out.add((p.get("protocol") or "TCP", None, None))  # every port of the protocol
            continue
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        out.add((p.get("protocol") or "TCP", port, p.get("endPort")))
    return frozenset(out)


def _resolve(ports: Ports, dest: "PodInfo") -> Ports:
    """Named ports → the destination pod's numbers (a name it lacks matches nothing)."""
    out = set()
    for proto, port, end in ports:
        if isinstance(port, str):
            if port not in dest.ports:
                continue
            port = dest.ports[port]
        out.add((proto, port, end))
    return frozenset(out)


def _covers(outer: tuple, inner: tuple) -> bool:
    if outer[0] == "*":
        return True
    if outer[0] != inner[0] or inner[0] == "*":
        return False
    if outer[1] is None:
        return True
    if inner[1] is None:
        return False
    lo, hi = inner[1], inner[2] or inner[1]
    return outer[1] <= lo and hi <= (outer[2] or outer[1])


def intersect(a: Ports, b: Ports) -> Ports:
    """Ports both allow (an entry of one that the other covers)."""
    return frozenset([x for x in a if any(_covers(y, x) for y in b)]
                     + [y for y in b if any(_covers(x, y) for x in a)])


@dataclass
class Direction:
    isolated: bool = False
    rules: list[tuple["Peer | None", Ports]] = field(default_factory=list)  # None: any peer

    def ports(self, other: "PodInfo", dest: "PodInfo",
              ns_labels: dict[str, dict[str, str]]) -> Ports:
        """The ports this direction allows with `other` (ports of `dest`); empty: none."""
        if not self.isolated:
            return ANY_PORT
        out: set = set()
        for peer, ports in self.rules:
            if peer is None or peer.matches(other, ns_labels):
                out |= _resolve(ports, dest)
        return frozenset(out)

    @property
    def restricted(self) -> bool:
        return self.isolated and (None, ANY_PORT) not in self.rules


@dataclass
class Isolation:
    egress: Direction
    ingress: Direction

    @property
    def open(self) -> bool:
        return not self.egress.restricted and not self.ingress.restricted


@dataclass(frozen=True)
class Net:
    key: str
    internal: bool


@dataclass
class PodPlan:
    home: Net
    networks: dict[str, Net]  # key -> Net (includes home)
    aliases: tuple[str, ...]
    warnings: list[str] = field(default_factory=list)
    # who may connect to this pod, on which network and ports (internal networks only let
    # these through: `docker_firewall`)
    inbound: list[tuple[str, str, Ports]] = field(default_factory=list)  # (net key, uid, ports)


def _ns_labels(ns: str, ns_labels: dict[str, dict[str, str]]) -> dict[str, str]:
    return {**ns_labels.get(ns, {}), NS_NAME_LABEL: ns}


def _policy_types(spec: dict) -> list[str]:
    types = spec.get("policyTypes")
    if types:
        return list(types)
    return ["Ingress"] + (["Egress"] if "egress" in spec else [])


def _only_dns(ports: list[dict] | None) -> bool:
    return bool(ports) and all(str(p.get("port")) == str(DNS_PORT) for p in ports)


def _is_dns_peer(peer: dict) -> bool:
    ns_sel = peer.get("namespaceSelector")
    if ns_sel is None:
        return False
    return LabelSelector.from_dict(ns_sel).matches({NS_NAME_LABEL: "kube-system"}) and \
        bool(ns_sel)


def _peers(policy: dict, key: str, rule: dict, ns: str, name: str, direction: Direction) -> None:
    peers = rule.get(key)
    ports = rule.get("ports")
    if not peers:
        if key == "to" and ports and _only_dns(ports):
            return  # DNS anywhere: Docker's embedded DNS, inside the pod
        if key == "to" and ports:
            # "anything on port N" includes the world outside: no network expresses that
            raise PolicyUnsupported(
                f"NetworkPolicy {ns}/{name}: egress to any destination on ports "
                f"{[p.get('port') for p in ports]} cannot be enforced with Docker networks")
        direction.rules.append((None, _ports(ports)))
        return
    for peer in peers:
        if "ipBlock" in peer:
            raise PolicyUnsupported(
                f"NetworkPolicy {ns}/{name}: ipBlock {peer['ipBlock'].get('cidr')} "
                f"({'egress' if key == 'to' else 'ingress'}) cannot be enforced with Docker "
                f"networks; only podSelector/namespaceSelector peers are supported")
        if key == "to" and _is_dns_peer(peer) and _only_dns(ports):
            continue
        ns_sel = peer.get("namespaceSelector")
        pod_sel = peer.get("podSelector")
        direction.rules.append((Peer(
            namespace=ns,
            ns_selector=LabelSelector.from_dict(ns_sel) if ns_sel is not None else None,
            pod_selector=LabelSelector.from_dict(pod_sel) if pod_sel is not None else None),
            _ports(ports)))


def isolation(pod: PodInfo, policies: list[dict]) -> Isolation:
    """What the policies selecting the pod allow; PolicyUnsupported for shapes we cannot do."""
    egress, ingress = Direction(), Direction()
    for pol in policies:
        meta, spec = pol.get("metadata") or {}, pol.get("spec") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        if ns != pod.namespace or not LabelSelector.from_dict(
                spec.get("podSelector")).matches(pod.labels):
            continue
        types = _policy_types(spec)
        if "Egress" in types:
            egress.isolated = True
            for rule in spec.get("egress") or []:
                _peers(pol, "to", rule or {}, ns, name, egress)
        if "Ingress" in types:
            ingress.isolated = True
            for rule in spec.get("ingress") or []:
                _peers(pol, "from", rule or {}, ns, name, ingress)
    return Isolation(egress, ingress)


def _short(uid: str) -> str:
    return hashlib.sha256(uid.encode()).hexdigest()[:10]


def _aliases(pod: PodInfo, services: list[dict]) -> tuple[tuple[str, ...], list[str]]:
    aliases: list[str] = []
    warnings: list[str] = []
    for svc in services:
        meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
        if meta.get("namespace") != pod.namespace or not spec.get("selector"):
            continue
        if not all(pod.labels.get(k) == v for k, v in spec["selector"].items()):
            continue
        name, ns = meta.get("name", ""), pod.namespace
        bad = []
        for p in spec.get("ports") or []:
            target = p.get("targetPort", p.get("port"))
            if isinstance(target, str) and not target.isdigit():
                target = pod.ports.get(target, target)
            if str(target) != str(p.get("port")):
                bad.append(f"{p.get('port')}->{target}")
        if bad:
            warnings.append(f"Service {ns}/{name} maps ports {', '.join(bad)}: in docker mode a "
                            f"Service name resolves to the pod itself, so port must equal "
                            f"targetPort; the name is not served")
            continue
        aliases += [name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"]
    return tuple(dict.fromkeys(aliases)), warnings


def plan(pods: list[PodInfo], policies: list[dict], services: list[dict],
         ns_labels: dict[str, dict[str, str]]) -> dict[str, PodPlan | PolicyUnsupported]:
    """The networks of every pod (by uid), or why its policies cannot be enforced."""
    iso: dict[str, Isolation] = {}
    out: dict[str, PodPlan | PolicyUnsupported] = {}
    for p in pods:
        try:
            iso[p.uid] = isolation(p, policies)
        except PolicyUnsupported as e:
            out[p.uid] = e
    ok = [p for p in pods if p.uid in iso]
    for p in ok:
        i = iso[p.uid]
        home = Net("default", False) if i.open else Net(f"h-{_short(p.uid)}",
                                                       i.egress.restricted)
        aliases, warnings = _aliases(p, services)
        out[p.uid] = PodPlan(home=home, networks={home.key: home}, aliases=aliases,
                             warnings=warnings)
    for a in ok:
        for b in ok:
            if a.uid == b.uid or (iso[a.uid].open and iso[b.uid].open):
                continue
            ports = intersect(iso[a.uid].egress.ports(b, b, ns_labels),
                              iso[b.uid].ingress.ports(a, b, ns_labels))
            if not ports:
                continue
            pa, pb = out[a.uid], out[b.uid]
            assert isinstance(pa, PodPlan) and isinstance(pb, PodPlan)
            if pb.home.internal:
                net = pb.home
            else:
                x, y = sorted((_short(a.uid), _short(b.uid)))
                net = Net(f"p-{x}-{y}", True)
                pb.networks[net.key] = net
            pa.networks[net.key] = net
            pb.inbound.append((net.key, a.uid, ports))
    return out
