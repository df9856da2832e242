"""Service ClusterIPs in docker mode: what kube-proxy does, inside each pod's network namespace.

Docker serves Service *names* (network aliases, `docker_net_plan`), but a pod that has no DNS
(``dnsPolicy: None``) reaches a Service by its ClusterIP, e.g. through ``hostAliases``. Each pod
sandbox gets an iptables chain ``LC-SVC`` in its own nat OUTPUT: ``ClusterIP:port`` → the address
a selected pod has on a network both pods share, at the Service's targetPort (a named one
resolved through that pod's container ports). DNAT happens before the packet leaves the pod, so
the bridges' policy flows see the destination pod's own address and port, as a NetworkPolicy
sees them on most CNIs. No load balancing: the first selected pod (by uid) is used.
"""
from __future__ import annotations

import ipaddress
import logging
import subprocess
from dataclasses import dataclass
from typing import Iterable

log = logging.getLogger(__name__)

CHAIN = "LC-SVC"
POST_CHAIN = "LC-SVC-POST"


@dataclass(frozen=True)
class Endpoint:
    """One pod sandbox as the rules need it."""
    uid: str
    namespace: str
    labels: dict
    ports: dict  # container port name -> number
    ips: dict    # docker network name -> the pod's address there


@dataclass(frozen=True)
class NatRule:
    cluster_ip: str
    port: int
    protocol: str
    to_ip: str
    to_port: int

    def args(self) -> list[str]:
        return ["-d", f"{self.cluster_ip}/32", "-p", self.protocol.lower(), "--dport",
                str(self.port), "-j", "DNAT", "--to-destination", f"{self.to_ip}:{self.to_port}"]

    def post_args(self) -> list[str]:
        """The source address was picked for the ClusterIP's route (another network): give the
        translated packet the pod's address on the network it now leaves by, which the bridge's
        policy flows expect."""
        return ["-d", f"{self.to_ip}/32", "-p", self.protocol.lower(), "--dport", str(self.to_port),
                "-m", "conntrack", "--ctstate", "DNAT", "-j", "MASQUERADE"]


def _cluster_ip(spec: dict) -> str | None:
    ip = spec.get("clusterIP")
    try:
        ipaddress.ip_address(ip if isinstance(ip, str) else "")
    except ValueError:
        return None  # headless, ExternalName
    return ip


def _target(port: dict, dest: Endpoint) -> int | None:
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, str):
        target = int(target) if target.isdigit() else dest.ports.get(target)
    return target if isinstance(target, int) and 0 < target < 65536 else None


def nat_rules(endpoints: Iterable[Endpoint], services: Iterable[dict]) -> dict[str, tuple[NatRule, ...]]:
    """For every sandbox (by uid), its DNAT rules (pure)."""
    eps = sorted(endpoints, key=lambda e: e.uid)
    out: dict[str, list[NatRule]] = {e.uid: [] for e in eps}
    for svc in services:
        meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
        selector = spec.get("selector") or {}
        ip = _cluster_ip(spec)
        if ip is None or not selector:
            continue
        backends = [e for e in eps if e.namespace == meta.get("namespace")
                    and all(e.labels.get(k) == v for k, v in selector.items())]
        for src in eps:
            for dest in backends:
                shared = sorted(set(src.ips) & set(dest.ips))
                if dest.uid == src.uid or not shared:
                    continue
                for p in spec.get("ports") or []:
                    target = _target(p, dest)
                    if target is not None and isinstance(p.get("port"), int):
                        out[src.uid].append(NatRule(ip, p["port"], p.get("protocol", "TCP"),
                                                    dest.ips[shared[0]], target))
                break  # the first reachable backend serves this source
    return {uid: tuple(dict.fromkeys(rules)) for uid, rules in out.items()}


def _run(pid: int, args: list[str]) -> bool:
    try:
        done = subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables", "-w", "-t", "nat",
                               *args], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def apply_nat(pid: int, rules: tuple[NatRule, ...]) -> bool:
    """Replace the sandbox's chain with ``rules`` (blocking: run it in a thread)."""
    for chain, hook in ((CHAIN, "OUTPUT"), (POST_CHAIN, "POSTROUTING")):
        _run(pid, ["-N", chain])  # exists already after the first time
        if not _run(pid, ["-C", hook, "-j", chain]) and not _run(pid, ["-A", hook, "-j", chain]):
            log.warning("cannot add the Service chains in the network namespace of pid %s", pid)
            return False
    ok = _run(pid, ["-F", CHAIN]) and _run(pid, ["-F", POST_CHAIN])
    for rule in rules:
        ok = _run(pid, ["-A", CHAIN, *rule.args()]) and ok
        ok = _run(pid, ["-A", POST_CHAIN, *rule.post_args()]) and ok
    if not ok:
        log.warning("cannot set the Service rules in the network namespace of pid %s", pid)
    return ok
