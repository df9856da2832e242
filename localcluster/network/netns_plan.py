"""The pure part of the pod networks (`localcluster.network.netns`): settings, names and addresses, the
`ip -batch` lines and the nftables script that make one cluster's isolated pod network, and
finding what is ours in the tools' listings. No I/O here."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

MODES = ("host", "isolated", "auto")
DEFAULT_CIDR = "10.244.0.0/16"
SUBNET_PREFIX = 22  # 1021 pods per cluster, 64 clusters in a /16
RUN_DIR = Path("/run/localcluster-net")
GATEWAY = "gateway"  # egress host meaning "the gateway address of this cluster"
KINDS = ("netns", "link", "table")  # in the order they are removed: veths go with namespaces

_NETNS_RE = re.compile(r"^lcn(\d+)-(\d+)$")
_LINK_RE = re.compile(r"^lcn(\d+)(?:gw|p\d+)$")
_TABLE_RE = re.compile(r"^table inet localcluster_(\d+)$")


class NetworkError(Exception):
    """A pod network cannot be set up (bad settings, missing tools, a failed command)."""


# --- settings ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Egress:
    host: str  # an IPv4 address or GATEWAY
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_egress(text: str) -> Egress:
    """``HOST:PORT`` with HOST an IPv4 address of this host (not loopback) or ``gateway``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise NetworkError(f"egress {text!r}: expected HOST:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise NetworkError(f"egress {text!r}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise NetworkError(f"egress {text!r}: port must be from 1 to 65535")
    if host != GATEWAY:
        try:
            addr = ipaddress.IPv4Address(host)
        except ValueError:
            raise NetworkError(f"egress {text!r}: host must be an IPv4 address or "
                               f"'{GATEWAY}'") from None
        if addr.is_loopback or addr.is_unspecified:
            raise NetworkError(f"egress {text!r}: pods cannot reach the host's loopback; listen "
                               f"on the gateway address and allow '{GATEWAY}:{port}'")
    return Egress(host, port)


@dataclass(frozen=True)
class NetworkSettings:
    mode: str = "host"
    cidr: str = DEFAULT_CIDR
    egress: tuple[Egress, ...] = ()
    run_dir: Path = RUN_DIR

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise NetworkError(f"pod network {self.mode!r}: expected one of {', '.join(MODES)}")
        try:
            net = ipaddress.IPv4Network(self.cidr)
        except ValueError as e:
            raise NetworkError(f"pod CIDR {self.cidr!r}: {e}") from e
        if net.prefixlen > SUBNET_PREFIX:
            raise NetworkError(f"pod CIDR {self.cidr!r}: needs at least a /{SUBNET_PREFIX}")


# --- pure helpers --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """Names and addresses of cluster index ``index`` with subnet ``subnet``."""
    index: int
    subnet: ipaddress.IPv4Network

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def gateway_link(self) -> str:
        return f"lcn{self.index}gw"

    @property
    def table(self) -> str:
        return f"localcluster_{self.index}"

    @property
    def hosts(self) -> range:  # pod host numbers: .2 up to the last before broadcast
        return range(2, self.subnet.num_addresses - 1)

    def pod_ip(self, n: int) -> str:
        return str(self.subnet.network_address + n)

    def netns(self, n: int) -> str:
        return f"lcn{self.index}-{n}"

    def veth(self, n: int) -> str:
        return f"lcn{self.index}p{n}"

    def egress_hosts(self, egress: tuple[Egress, ...]) -> list[tuple[str, int]]:
        return [(self.gateway if e.host == GATEWAY else e.host, e.port) for e in egress]


def subnet_of(cidr: str, index: int) -> ipaddress.IPv4Network:
    subnets = ipaddress.IPv4Network(cidr).subnets(new_prefix=SUBNET_PREFIX)
    for i, net in enumerate(subnets):
        if i == index:
            return net
    raise NetworkError(f"pod CIDR {cidr} has no subnet number {index}")


def subnet_count(cidr: str) -> int:
    return 2 ** (SUBNET_PREFIX - ipaddress.IPv4Network(cidr).prefixlen)


def nft_script(lay: Layout, egress: tuple[Egress, ...]) -> str:
    pods = f'iifname "lcn{lay.index}p*"'
    elements = ", ".join(f"{h} . {p}" for h, p in lay.egress_hosts(egress))
    return "\n".join([
        f"table inet {lay.table} {{",
        "  set egress { type ipv4_addr . inet_service; "
        + (f"elements = {{ {elements} }}; " if elements else "") + "}",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        f"    {pods} ct state established,related accept",
        f"    {pods} ip daddr . tcp dport @egress ct state new accept",
        f"    {pods} meta l4proto tcp reject with tcp reset",
        f"    {pods} reject with icmpx type admin-prohibited",
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        f"    {pods} reject with icmpx type admin-prohibited",
        f'    oifname "lcn{lay.index}p*" drop',
        "  }",
        "}",
        "",
    ])


def host_batch(lay: Layout, n: int) -> str:
    """`ip -batch` lines making pod n's namespace, veth pair, host address and route."""
    ns, veth, gw, ip = lay.netns(n), lay.veth(n), lay.gateway, lay.pod_ip(n)
    return "\n".join([
        f"netns add {ns}",
        f"link add {veth} type veth peer name eth0 netns {ns}",
        f"link set {veth} addrgenmode none",
        f"addr add {gw}/32 dev {veth}",
        f"link set {veth} up",
        f"route add {ip}/32 dev {veth} src {gw}",
        "",
    ])


def pod_batch(lay: Layout, n: int, egress: tuple[Egress, ...]) -> str:
    """`ip -n <netns> -batch` lines: the pod's side (no default route: see the module doc)."""
    gw, ip = lay.gateway, lay.pod_ip(n)
    lines = ["link set lo up", "link set eth0 addrgenmode none", f"addr add {ip}/32 dev eth0",
             "link set eth0 up", f"route add {gw}/32 dev eth0 scope link src {ip}"]
    for host in sorted({h for h, _ in lay.egress_hosts(egress)} - {gw}):
        lines.append(f"route add {host}/32 via {gw} dev eth0 src {ip}")
    return "\n".join(lines + [""])


def parse_indexes(netns_list: str, links: str, tables: str) -> dict[int, list[tuple[str, str]]]:
    """Index -> [(kind, name)] of everything named like ours in the tools' listings."""
    found: dict[int, list[tuple[str, str]]] = {}
    for line in netns_list.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NETNS_RE.match(name)
        if m:
            found.setdefault(int(m[1]), []).append(("netns", name))
    for line in links.splitlines():  # `ip -o link show`: "5: lcn3p2@if2: <...>"
        parts = line.split(":")
        if len(parts) > 2:
            name = parts[1].strip().split("@")[0]
            m = _LINK_RE.match(name)
            if m:
                found.setdefault(int(m[1]), []).append(("link", name))
    for line in tables.splitlines():
        m = _TABLE_RE.match(line.strip())
        if m:
            found.setdefault(int(m[1]), []).append(("table", f"localcluster_{m[1]}"))
    return found
