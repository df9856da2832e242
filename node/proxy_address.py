"""The proxy's address as its Service gives it (pure; read by `node.proxy_service`)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from node.errors import ClusterError


class ProxyServiceError(ClusterError):
    """The proxy's Service is missing or unusable (no ClusterIP, no such port, named targetPort)."""


@dataclass(frozen=True)
class ProxyAddress:
    """Where algorithm pods reach the proxy: the Service's ClusterIP and port (what the pods
    connect to) and the targetPort (what the proxy's pods listen on, for the NetworkPolicy)."""
    cluster_ip: str
    port: int
    target_port: int


def _port_number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def parse_service(service: Any, port: int) -> ProxyAddress:
    """The ProxyAddress of a Service object (API JSON shape) for its TCP port ``port``."""
    meta = service.get("metadata") if isinstance(service, dict) else None
    name = f"{(meta or {}).get('namespace', '?')}/{(meta or {}).get('name', '?')}"
    spec = service.get("spec") if isinstance(service, dict) else None
    if not isinstance(spec, dict):
        raise ProxyServiceError(f"service {name} has no spec")
    ip = spec.get("clusterIP")
    try:
        # "None" (headless) or "" would leave nothing to put in hostAliases
        ipaddress.ip_address(ip if isinstance(ip, str) else "")
    except ValueError as e:
        raise ProxyServiceError(f"service {name} has no ClusterIP (clusterIP {str(ip)[:40]!r}); "
                                f"the proxy needs a ClusterIP Service") from e
    for p in spec.get("ports") or []:
        if not isinstance(p, dict) or p.get("port") != port or p.get("protocol", "TCP") != "TCP":
            continue
        target = p.get("targetPort", port)
        if isinstance(target, str) and target.isdigit():
            target = int(target)
        if isinstance(target, str):
            # resolving a name needs the proxy pods' container ports (more RBAC, and pods may
            # disagree while rolling): ask for a number instead
            raise ProxyServiceError(f"service {name} port {port} has the named targetPort "
                                    f"{target[:20]!r}; give the proxy pods' port as a number")
        if not _port_number(target):
            raise ProxyServiceError(f"service {name} port {port} has an invalid targetPort "
                                    f"{str(target)[:20]!r}")
        return ProxyAddress(cluster_ip=ip, port=port, target_port=target)
    raise ProxyServiceError(f"service {name} has no TCP port {port} (proxy.port)")
