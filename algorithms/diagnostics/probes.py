"""Which addresses the isolation checks try, from the task input or the defaults for a real
cluster. When the input has `probes`, exactly those targets are used (a category it leaves out is
reported undecided): tests rely on this to never touch an address they do not own."""
from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from algorithms.common.errors import InputError

CATEGORIES = ("kubernetes_api", "node", "pods", "outside")
DEFAULT_TIMEOUT = 3.0
DEFAULT_DNS_PORT = 443
KUBELET_PORT = 10250


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ProbeSettings:
    targets: dict[str, list[Target]] = field(default_factory=dict)  # category -> targets
    dns_names: list[Target] = field(default_factory=list)
    timeout: float = DEFAULT_TIMEOUT


def parse_target(text: str, default_port: int | None = None) -> Target:
    """`host:port`, `[v6 address]:port`, or a bare host when a default port is given."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"probe target must be a non-empty 'host:port' string, got {text!r}")
    text = text.strip()
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise InputError(f"probe target {text!r}: unclosed '['")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise InputError(f"probe target {text!r}: expected ':port' after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        raise InputError(f"probe target {text!r}: write IPv6 addresses as [address]:port")
    if port_text is None:
        if default_port is None:
            raise InputError(f"probe target {text!r} needs a port ('host:port')")
        return Target(host, default_port)
    try:
        port = int(port_text)
    except ValueError:
        raise InputError(f"probe target {text!r}: port {port_text!r} is not a number") from None
    if not host or not 0 < port < 65536:
        raise InputError(f"probe target {text!r}: needs a host and a port from 1 to 65535")
    return Target(host, port)


def _targets(raw: Any, key: str, default_port: int | None = None) -> list[Target]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InputError(f"probes.{key} must be a list of 'host:port' strings")
    return [parse_target(t, default_port) for t in raw]


def parse_probes(task_input: Any, environ: Mapping[str, str],
                 route_table: Path = Path("/proc/net/route")) -> ProbeSettings:
    if task_input is None:
        task_input = {}
    if not isinstance(task_input, dict):
        raise InputError("the diagnostics input must be a JSON object")
    raw = task_input.get("probes")
    if raw is None:
        return default_probes(environ, route_table)
    if not isinstance(raw, dict):
        raise InputError("'probes' must be an object of lists of targets")
    unknown = set(raw) - set(CATEGORIES) - {"dns_names", "timeout"}
    if unknown:
        raise InputError(f"unknown probe categories: {', '.join(sorted(unknown))}")
    timeout = raw.get("timeout", DEFAULT_TIMEOUT)
    if (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
            or not math.isfinite(timeout) or not 0 < timeout <= 60):
        raise InputError("probes.timeout must be a number of seconds in (0, 60]")
    return ProbeSettings(
        targets={c: _targets(raw.get(c), c) for c in CATEGORIES},
        dns_names=_targets(raw.get("dns_names"), "dns_names", DEFAULT_DNS_PORT),
        timeout=float(timeout),
    )


def default_probes(environ: Mapping[str, str], route_table: Path) -> ProbeSettings:
    """Targets for a real cluster. Other pods cannot be guessed: that category stays undecided
    unless the input names some."""
    k8s = [Target("kubernetes.default.svc", 443)]
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if host and port:
        try:
            k8s.append(parse_target(f"[{host}]:{port}" if ":" in host else f"{host}:{port}"))
        except InputError:
            pass
    gateway = default_gateway(route_table)
    return ProbeSettings(
        targets={
            "kubernetes_api": k8s,
            # Pods usually reach their node through the default gateway; 10250 is the kubelet.
            "node": [Target(gateway, KUBELET_PORT)] if gateway else [],
            "pods": [],
            "outside": [Target("1.1.1.1", 443), Target("8.8.8.8", 53)],
        },
        dns_names=[Target("example.com", DEFAULT_DNS_PORT)],
    )


def default_gateway(route_table: Path) -> str | None:
    """The IPv4 default gateway from /proc/net/route (little-endian hex), if there is one."""
    try:
        lines = route_table.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "00000000" and fields[2] != "00000000":
            try:
                return str(ipaddress.IPv4Address(bytes.fromhex(fields[2])[::-1]))
            except ValueError:
                continue
    return None
