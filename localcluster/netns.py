"""Pod networks of the local cluster: the host's network, or one isolated namespace per pod.

``host`` (the default of ``serve``): every pod shares the host's network and gets a loopback pod
IP (127.0.1.x) it may bind to. Nothing is isolated.

``isolated`` (needs root, ``ip`` from iproute2 and ``nft`` from nftables): every pod gets its own
network namespace, shared by all its containers, whose only way out is the egress allow-list
(the proxy's address and port). The cluster takes one free /24 of the pod CIDR
(10.244.0.0/16 by default; index ``i``):
- ``lcn<i>gw``: a port-less bridge holding the gateway address ``10.244.i.1/32`` on the host, so
  the proxy can listen there before any pod exists;
- per pod (host number ``n``): network namespace ``lcn<i>-<n>`` with ``lo`` and ``eth0``
  (``10.244.i.n/32``), the peer of host veth ``lcn<i>p<n>`` (which also holds the gateway
  address, so ARP works whatever the host's ``arp_ignore``). The pod has routes only to the
  gateway and to the egress hosts (via the gateway) — no default route: anything else is
  ENETUNREACH inside the pod and never leaves it. The host routes ``10.244.i.n/32`` to the veth,
  so host processes (the node) can reach pods;
- nftables table ``inet localcluster_<i>``: traffic *from* pod veths to the host is accepted only
  to the egress (address, port) pairs and as replies of connections the host opened; other TCP
  gets a reset, everything else an ICMP admin-prohibited; nothing is forwarded from or to pods.

Every cluster records its index with its pid in ``/run/localcluster-net/<i>.json`` (under a lock)
before it makes anything, and removes everything on close. `cleanup_leftovers` — run at every
start and by ``python -m localcluster cleanup-network`` — removes the namespaces, links and tables
of indexes whose cluster is gone (killed without cleaning up), never those of a live cluster, so
clusters can run side by side.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

MODES = ("host", "isolated", "auto")
DEFAULT_CIDR = "10.244.0.0/16"
SUBNET_PREFIX = 24
RUN_DIR = Path("/run/localcluster-net")
HOST_IP = "127.0.0.1"
GATEWAY = "gateway"  # egress host meaning "the gateway address of this cluster"

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


def isolation_unavailable() -> str | None:
    """Why isolated pod networks cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "not running as root"
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found (install iproute2 and nftables)"
    return None


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


# --- commands ------------------------------------------------------------------------------------

def _run(argv: list[str], stdin: str | None = None, check: bool = True) -> str:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetworkError(f"{' '.join(argv)}: {e}") from e
    if check and done.returncode != 0:
        raise NetworkError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


async def _arun(argv: list[str], stdin: str | None = None) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as e:
        raise NetworkError(f"{' '.join(argv)}: {e}") from e
    try:
        _, err = await proc.communicate(stdin.encode() if stdin else None)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise NetworkError(f"{' '.join(argv)} failed: {err.decode().strip() or proc.returncode}")


def _remove(kind: str, name: str) -> None:
    argv = {"netns": ["ip", "netns", "del", name], "link": ["ip", "link", "del", name],
            "table": ["nft", "delete", "table", "inet", name]}[kind]
    _run(argv, check=False)


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_alive(record: Path) -> bool:
    try:
        data = json.loads(record.read_text())
        return _start_time(int(data["pid"])) == str(data["start_time"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


@contextlib.contextmanager
def _locked(run_dir: Path):
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(run_dir / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _cleanup_locked(run_dir: Path) -> list[str]:
    live = {int(p.stem) for p in run_dir.glob("*.json") if p.stem.isdigit() and _owner_alive(p)}
    for p in run_dir.glob("*.json"):
        if not (p.stem.isdigit() and int(p.stem) in live):
            p.unlink(missing_ok=True)
    found = parse_indexes(_run(["ip", "netns", "list"], check=False),
                          _run(["ip", "-o", "link", "show"], check=False),
                          _run(["nft", "list", "tables"], check=False))
    removed = []
    for index, items in sorted(found.items()):
        if index in live:
            continue
        # namespaces first: their veths go with them
        for kind, name in sorted(items, key=lambda kn: ("netns", "link", "table").index(kn[0])):
            _remove(kind, name)
            removed.append(f"{kind} {name}")
    return removed


def cleanup_leftovers(run_dir: Path = RUN_DIR) -> list[str]:
    """Remove what clusters that are gone left behind; returns what was removed."""
    if isolation_unavailable():
        return []
    with _locked(run_dir):
        removed = _cleanup_locked(run_dir)
    if removed:
        log.warning("removed leftovers of local clusters that are gone: %s", ", ".join(removed))
    return removed


# --- the networks --------------------------------------------------------------------------------

@dataclass(frozen=True)
class PodNet:
    ip: str
    netns: str | None = None  # path of the pod's network namespace; None = the host's


class HostNetwork:
    """Host networking: 127.0.1.2 … 127.0.1.254, handed out in turn, skipping addresses in use."""

    mode = "host"

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason
        self._next = 2
        self._used: dict[str, str] = {}  # uid -> ip

    async def setup(self, uid: str, host_network: bool = False) -> PodNet:
        if uid in self._used:
            return PodNet(self._used[uid])
        taken = set(self._used.values())
        for _ in range(253):
            ip = f"127.0.1.{self._next}"
            self._next = 2 if self._next >= 254 else self._next + 1
            if ip not in taken:
                self._used[uid] = ip
                return PodNet(ip)
        log.warning("all 253 pod IPs are in use; sharing one")
        return PodNet(f"127.0.1.{self._next}")

    def release(self, uid: str) -> None:
        self._used.pop(uid, None)

    async def drain(self) -> None:
        self._used.clear()

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"mode": "host", **({"reason": self.reason} if self.reason else {})}


@dataclass
class IsolatedNetwork:
    """One network namespace per pod; see the module doc. Make it with `open`."""

    layout: Layout
    egress: tuple[Egress, ...]
    run_dir: Path
    mode: str = "isolated"
    pods: dict[str, int] = field(default_factory=dict)  # uid -> host number
    pending: set = field(default_factory=set)  # teardown tasks

    @classmethod
    def open(cls, settings: NetworkSettings) -> "IsolatedNetwork":
        why = isolation_unavailable()
        if why:
            raise NetworkError(f"isolated pod networks are not possible: {why}")
        with _locked(settings.run_dir):
            _cleanup_locked(settings.run_dir)
            used = {int(p.stem) for p in settings.run_dir.glob("*.json") if p.stem.isdigit()}
            count = subnet_count(settings.cidr)
            last_file = settings.run_dir / "last"
            try:
                last = int(last_file.read_text())
            except (OSError, ValueError):
                last = -1
            # round robin: an index just given up is not reused at once (its cleanup may be
            # checked by whoever stopped it)
            free = [i % count for i in range(last + 1, last + 1 + count) if i % count not in used]
            if not free:
                raise NetworkError(f"no free /{SUBNET_PREFIX} left in {settings.cidr}")
            lay = Layout(free[0], subnet_of(settings.cidr, free[0]))
            last_file.write_text(str(lay.index))
            record = settings.run_dir / f"{lay.index}.json"
            record.write_text(json.dumps({"pid": os.getpid(),
                                          "start_time": _start_time(os.getpid())}))
        net = cls(lay, settings.egress, settings.run_dir)
        try:
            gw = lay.gateway_link
            _run(["ip", "-batch", "-"], "\n".join([
                f"link add {gw} type bridge", f"link set {gw} addrgenmode none",
                f"addr add {lay.gateway}/32 dev {gw}", f"link set {gw} up", ""]))
            _run(["nft", "-f", "-"], nft_script(lay, settings.egress))
        except NetworkError:
            net.close()
            raise
        log.info("isolated pod networks in %s, gateway %s, egress only to %s", lay.subnet,
                 lay.gateway, ", ".join(f"{h}:{p}" for h, p in lay.egress_hosts(net.egress))
                 or "nothing")
        return net

    async def setup(self, uid: str, host_network: bool = False) -> PodNet:
        if host_network:
            return PodNet(HOST_IP)
        lay = self.layout
        n = self.pods.get(uid)
        if n is None:
            taken = set(self.pods.values())
            n = next((h for h in lay.hosts if h not in taken), None)
            if n is None:
                raise NetworkError(f"no free pod IP left in {lay.subnet}")
            self.pods[uid] = n
        ns = lay.netns(n)
        if not Path("/run/netns", ns).exists():
            try:
                await _arun(["ip", "-batch", "-"], host_batch(lay, n))
                await _arun(["ip", "-n", ns, "-batch", "-"], pod_batch(lay, n, self.egress))
            except BaseException:
                await asyncio.shield(self._teardown(ns))
                self.pods.pop(uid, None)
                raise
        return PodNet(lay.pod_ip(n), f"/run/netns/{ns}")

    async def _teardown(self, ns: str) -> None:
        # the veth goes with the namespace (its other end was inside), the route with the veth
        with contextlib.suppress(NetworkError):
            await _arun(["ip", "netns", "del", ns])

    def release(self, uid: str) -> None:
        n = self.pods.pop(uid, None)
        if n is not None:
            task = asyncio.ensure_future(self._teardown(self.layout.netns(n)))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def drain(self) -> None:
        for uid in list(self.pods):
            self.release(uid)
        while self.pending:
            await asyncio.gather(*list(self.pending), return_exceptions=True)

    def close(self) -> None:
        """Remove everything this cluster made (idempotent)."""
        lay = self.layout
        for n in self.pods.values():
            _remove("netns", lay.netns(n))
        self.pods.clear()
        with _locked(self.run_dir):
            found = parse_indexes(_run(["ip", "netns", "list"], check=False),
                                  _run(["ip", "-o", "link", "show"], check=False),
                                  _run(["nft", "list", "tables"], check=False))
            for kind, name in sorted(found.get(lay.index, []),
                                     key=lambda kn: ("netns", "link", "table").index(kn[0])):
                _remove(kind, name)
            (self.run_dir / f"{lay.index}.json").unlink(missing_ok=True)

    def describe(self) -> dict:
        lay = self.layout
        return {"mode": "isolated", "index": lay.index, "subnet": str(lay.subnet),
                "gateway": lay.gateway,
                "egress": [f"{h}:{p}" for h, p in lay.egress_hosts(self.egress)]}


def open_network(settings: NetworkSettings) -> HostNetwork | IsolatedNetwork:
    """The pod network for `settings.mode`; ``auto`` is isolated when possible, else host."""
    if settings.mode == "host":
        return HostNetwork()
    why = isolation_unavailable()
    if settings.mode == "auto" and why:
        log.warning("pod network isolation is OFF (%s): pods share the host's network", why)
        return HostNetwork(reason=why)
    return IsolatedNetwork.open(settings)
