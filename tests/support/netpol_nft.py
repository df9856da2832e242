"""NetworkPolicy egress of one pod as an nftables ruleset, for tests that enforce a policy in a
network namespace they made (as a CNI would). Only what the project's policies use: `to` peers
with matchLabels pod and namespace selectors (or ipBlock cidr), ports with protocol and number.
Anything else raises PolicyError rather than being enforced wrongly."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TABLE = "v6_test_policy"


class PolicyError(ValueError):
    """A policy feature this translator does not enforce."""


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    labels: dict[str, str]
    ip: str
    namespace_labels: dict[str, str] = field(default_factory=dict)

    def ns_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


def _check_selector(selector: dict[str, Any] | None) -> None:
    if selector is not None and set(selector) - {"matchLabels"}:
        raise PolicyError(f"selector {selector}: only matchLabels is supported")


def _matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    _check_selector(selector)
    if selector is None:
        return True
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def peer_addresses(peer: dict[str, Any], source_namespace: str, pods: list[PodInfo]) -> list[str]:
    if set(peer) - {"podSelector", "namespaceSelector", "ipBlock"}:
        raise PolicyError(f"peer {peer}: unsupported keys")
    if "ipBlock" in peer:
        if set(peer["ipBlock"]) != {"cidr"}:
            raise PolicyError(f"ipBlock {peer['ipBlock']}: only cidr is supported")
        return [peer["ipBlock"]["cidr"]]
    _check_selector(peer.get("podSelector"))
    _check_selector(peer.get("namespaceSelector"))
    found = []
    for pod in pods:
        # no namespaceSelector: the policy's own namespace only
        in_ns = (_matches(peer["namespaceSelector"], pod.ns_labels()) if "namespaceSelector" in peer
                 else pod.namespace == source_namespace)
        if in_ns and _matches(peer.get("podSelector"), pod.labels):
            found.append(pod.ip)
    return found


def _port_matches(ports: list[dict[str, Any]] | None) -> list[str]:
    if not ports:
        return [""]
    out = []
    for p in ports:
        proto = str(p.get("protocol", "TCP")).lower()
        if proto not in ("tcp", "udp") or not isinstance(p.get("port"), int) or "endPort" in p:
            raise PolicyError(f"port {p}: only numeric TCP/UDP ports are supported")
        out.append(f"{proto} dport {p['port']}")
    return out


def egress_rules(policies: list[dict[str, Any]], pod: PodInfo, pods: list[PodInfo]) -> list[str]:
    """nft accept rules for what the policies selecting `pod` allow; [] when none selects it
    would mean "everything", which the tests never want: PolicyError."""
    rules, selected = [], False
    for policy in policies:
        spec = policy["spec"]
        if policy["metadata"]["namespace"] != pod.namespace \
                or not _matches(spec.get("podSelector"), pod.labels) \
                or "Egress" not in spec.get("policyTypes", []):
            continue
        selected = True
        for rule in spec.get("egress") or []:
            peers = rule.get("to")
            addresses = ([a for peer in peers for a in peer_addresses(peer, pod.namespace, pods)]
                         if peers else [""])
            for address in addresses:
                for port in _port_matches(rule.get("ports")):
                    match = " ".join(x for x in (f"ip daddr {address}" if address else "",
                                                 port) if x)
                    rules.append(f"{match} accept" if match else "accept")
    if not selected:
        raise PolicyError("no policy with Egress selects the pod: all egress would be open")
    return rules


def nft_script(rules: list[str]) -> str:
    """Default deny for the pod's own output; refused at once (reset / ICMP) as many CNIs do, so
    the tests need not wait for timeouts."""
    body = "\n".join(f"    {r}" for r in rules)
    return (f"table inet {TABLE} {{\n  chain output {{\n"
            f"    type filter hook output priority 0; policy accept;\n"
            f"    oifname \"lo\" accept\n    ct state established,related accept\n{body}\n"
            f"    meta l4proto tcp reject with tcp reset\n"
            f"    reject with icmpx type admin-prohibited\n  }}\n}}\n")
