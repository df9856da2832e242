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

from .dns_wire import DnsWireError, encode_name

CATEGORIES = ("kubernetes_api", "node", "pods", "outside")
DNS_KEYS = ("dns_resolvers", "dns_system", "dns_domain")
DEFAULT_TIMEOUT = 3.0
DEFAULT_DNS_PORT = 443
KUBELET_PORT = 10250
RESOLVER_PORT = 53
# Extra resolvers for the DNS-exfiltration probe, "ip[:port],...". Set (even empty) it replaces
# the well-known public resolvers of the defaults; with `probes` in the input it adds to them.
RESOLVERS_ENV = "V6_DIAG_DNS_RESOLVERS"
# Probe names are "<random hex>.<domain>": `.invalid` never exists, so nothing can be served for
# it; a domain whose authoritative server you watch shows leaks that pass a forwarding resolver.
DOMAIN_ENV = "V6_DIAG_DNS_DOMAIN"
DEFAULT_DNS_DOMAIN = "v6-exfil-probe.invalid"
WELL_KNOWN_RESOLVERS = ("1.1.1.1", "8.8.8.8", "9.9.9.9", "208.67.222.222")
RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class DnsProbes:
    """Where the DNS-exfiltration probe sends its query. `system`: also the resolvers this pod
    would use by itself (resolv.conf, the cluster DNS Service env, getaddrinfo)."""
    resolvers: list[Target] = field(default_factory=list)
    system: bool = False
    domain: str = DEFAULT_DNS_DOMAIN


@dataclass(frozen=True)
class ProbeSettings:
    targets: dict[str, list[Target]] = field(default_factory=dict)  # category -> targets
    dns_names: list[Target] = field(default_factory=list)
    timeout: float = DEFAULT_TIMEOUT
    dns: DnsProbes = field(default_factory=DnsProbes)


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


def parse_resolver(text: str) -> Target:
    """A resolver by IP address (a name would need DNS to find it), port 53 unless given."""
    target = parse_target(text, RESOLVER_PORT)
    try:
        ipaddress.ip_address(target.host)
    except ValueError as e:
        raise InputError(f"DNS resolver {text!r}: must be an IP address (with an optional "
                         f"port), not a name") from e
    return target


def env_resolvers(environ: Mapping[str, str]) -> list[Target] | None:
    """The resolvers of V6_DIAG_DNS_RESOLVERS; None when it is not set."""
    raw = environ.get(RESOLVERS_ENV)
    if raw is None:
        return None
    try:
        return [parse_resolver(t) for t in raw.split(",") if t.strip()]
    except InputError as e:
        raise InputError(f"{RESOLVERS_ENV}: {e}") from e


def resolv_conf_resolvers(text: str) -> list[Target]:
    """The `nameserver` lines of a resolv.conf; none listed means 127.0.0.1, as in glibc."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            host = fields[1].split("%", 1)[0]  # a scoped v6 address: the scope is no port
            try:
                ipaddress.ip_address(host)
            except ValueError:
                continue
            found.append(Target(host, RESOLVER_PORT))
    return found or [Target("127.0.0.1", RESOLVER_PORT)]


def cluster_dns_resolvers(environ: Mapping[str, str]) -> list[Target]:
    """Service env of a cluster DNS (KUBE_DNS_SERVICE_HOST, COREDNS_SERVICE_HOST, ...): Kubernetes
    sets it for Services in the pod's namespace, and enableServiceLinks may add others."""
    found = []
    for var, host in sorted(environ.items()):
        prefix = var[:-len("_SERVICE_HOST")]
        if not var.endswith("_SERVICE_HOST") or "DNS" not in prefix:
            continue
        port = next((environ[p] for p in (f"{prefix}_SERVICE_PORT_DNS",
                                          f"{prefix}_SERVICE_PORT_DNS_TCP") if p in environ),
                    str(RESOLVER_PORT))
        try:
            found.append(parse_resolver(f"[{host}]:{port}" if ":" in host else f"{host}:{port}"))
        except InputError:
            continue
    return found


def system_resolvers(environ: Mapping[str, str], resolv_conf: Path = RESOLV_CONF) -> list[Target]:
    try:
        text = resolv_conf.read_text()
    except OSError:
        text = ""
    return resolv_conf_resolvers(text) + cluster_dns_resolvers(environ)


def _dns_probes(raw: Mapping[str, Any], environ: Mapping[str, str]) -> DnsProbes:
    listed = raw.get("dns_resolvers")
    if listed is not None and not isinstance(listed, list):
        raise InputError("probes.dns_resolvers must be a list of 'ip[:port]' strings")
    system = raw.get("dns_system", False)
    if not isinstance(system, bool):
        raise InputError("probes.dns_system must be true or false")
    domain = parse_domain(raw.get("dns_domain", environ.get(DOMAIN_ENV) or DEFAULT_DNS_DOMAIN))
    resolvers = [parse_resolver(t) for t in listed or []] + (env_resolvers(environ) or [])
    return DnsProbes(resolvers=resolvers, system=system, domain=domain)


def parse_domain(value: Any) -> str:
    """The probe's domain, with room left for the 16 hex characters put in front of it."""
    if not isinstance(value, str) or not value.strip("."):
        raise InputError(f"probes.dns_domain / {DOMAIN_ENV}: expected a DNS domain such as "
                         f"'example.invalid', got {value!r}")
    domain = value.strip(".")
    try:
        encode_name("0" * 16 + "." + domain)
    except DnsWireError as e:
        raise InputError(f"probes.dns_domain / {DOMAIN_ENV}: {e}") from e
    return domain


def parse_probes(task_input: Any, environ: Mapping[str, str],
                 route_table: Path = Path("/proc/net/route"),
                 resolv_conf: Path = RESOLV_CONF) -> ProbeSettings:
    """With `probes` in the input, the DNS probe asks only the resolvers listed there or in
    V6_DIAG_DNS_RESOLVERS, and the pod's own (resolv.conf, ...) only with `dns_system: true`."""
    if task_input is None:
        task_input = {}
    if not isinstance(task_input, dict):
        raise InputError("the diagnostics input must be a JSON object")
    raw = task_input.get("probes")
    if raw is None:
        return default_probes(environ, route_table, resolv_conf)
    if not isinstance(raw, dict):
        raise InputError("'probes' must be an object of lists of targets")
    unknown = set(raw) - set(CATEGORIES) - set(DNS_KEYS) - {"dns_names", "timeout"}
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
        dns=_resolve_system(_dns_probes(raw, environ), environ, resolv_conf),
    )


def _resolve_system(dns: DnsProbes, environ: Mapping[str, str], resolv_conf: Path) -> DnsProbes:
    """The pod's own resolvers added to the list when `system` is on."""
    if not dns.system:
        return dns
    return DnsProbes(resolvers=system_resolvers(environ, resolv_conf) + dns.resolvers,
                     system=True, domain=dns.domain)


def default_probes(environ: Mapping[str, str], route_table: Path,
                   resolv_conf: Path = RESOLV_CONF) -> ProbeSettings:
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
        dns=_resolve_system(DnsProbes(
            resolvers=[Target(ip, RESOLVER_PORT) for ip in WELL_KNOWN_RESOLVERS]
            if (extra := env_resolvers(environ)) is None else extra,
            system=True, domain=parse_domain(environ.get(DOMAIN_ENV) or DEFAULT_DNS_DOMAIN)),
            environ, resolv_conf),
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
