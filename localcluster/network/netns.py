"""Pod networks of the local cluster: the host's network, or one isolated namespace per pod.

``host`` (the default of ``serve``): every pod shares the host's network and gets a loopback pod
IP (127.0.1.x) it may bind to. Nothing is isolated.

``isolated`` (needs root, ``ip`` from iproute2 and ``nft`` from nftables): every pod gets its own
network namespace, shared by all its containers, whose only way out is the egress allow-list
(the proxy's address and port). The cluster takes one free /22 of the pod CIDR
(10.244.0.0/16 by default: 64 clusters side by side; index ``i``, subnet ``S``):
- ``lcn<i>gw``: a port-less bridge holding the gateway address (``S`` + 1, /32) on the host, so
  the proxy can listen there before any pod exists;
- per pod (host number ``n``, 2 … 1022): network namespace ``lcn<i>-<n>`` with ``lo`` and
  ``eth0`` (``S`` + n, /32), the peer of host veth ``lcn<i>p<n>`` (which also holds the gateway
  address, so ARP works whatever the host's ``arp_ignore``). The pod has routes only to the
  gateway and to the egress hosts (via the gateway) — no default route: anything else is
  ENETUNREACH inside the pod and never leaves it. The host routes the pod IP to the veth, so
  host processes (the node) can reach pods. A pod keeps its namespace and IP until it is
  deleted (the last bytes its containers sent must not be cut off with the veth);
- nftables table ``inet localcluster_<i>``: traffic *from* pod veths to the host is accepted only
  to the egress (address, port) pairs and as replies of connections the host opened; other TCP
  gets a reset, everything else an ICMP admin-prohibited; nothing is forwarded from or to pods.

Every cluster records its index with its pid in ``/run/localcluster-net/<i>.json`` (under a lock)
before it makes anything, and removes everything on close. `cleanup_leftovers` — run at every
start and by ``python -m localcluster cleanup-network`` — removes the namespaces, links and tables
of indexes whose cluster is gone (killed without cleaning up), never those of a live cluster, so
clusters can run side by side.

The pure part (settings, names, the `ip` batches and the nftables script) is
`localcluster.network.netns_plan`; this module runs the commands.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from localcluster.network.netns_plan import (  # noqa: F401  (re-exported: the module's interface)
    DEFAULT_CIDR, GATEWAY, KINDS, MODES, RUN_DIR, SUBNET_PREFIX, Egress, Layout, NetworkError, NetworkSettings,
    host_batch, nft_script, parse_egress, parse_indexes, pod_batch, subnet_count, subnet_of)

log = logging.getLogger(__name__)

HOST_IP = "127.0.0.1"


def isolation_unavailable() -> str | None:
    """Why isolated pod networks cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "not running as root"
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found (install iproute2 and nftables)"
    return None


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


def _teardown_batch(lay: Layout, n: int) -> str:
    return f"link del {lay.veth(n)}\nnetns del {lay.netns(n)}\n"


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
        for kind, name in sorted(items, key=lambda kn: KINDS.index(kn[0])):
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

    def finished(self, uid: str) -> None:
        """The pod's containers are done for good: its IP may go to another pod."""
        self.release(uid)

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
    tearing: set = field(default_factory=set)  # host numbers being torn down
    last: int = 0  # the host number handed out last

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
        if n is not None:  # set up before (a pod's network is made once)
            return PodNet(lay.pod_ip(n), f"/run/netns/{lay.netns(n)}")
        taken = set(self.pods.values()) | self.tearing
        hosts = list(lay.hosts)
        start = hosts.index(self.last) + 1 if self.last in hosts else 0
        # round robin: a number just given up may still be in the kernel's hands
        n = next((h for h in hosts[start:] + hosts[:start] if h not in taken), None)
        if n is None:
            raise NetworkError(f"no free pod IP left in {lay.subnet}")
        self.pods[uid], self.last = n, n
        try:
            await _arun(["ip", "-batch", "-"], host_batch(lay, n))
            await _arun(["ip", "-n", lay.netns(n), "-batch", "-"],
                        pod_batch(lay, n, self.egress))
        except BaseException:
            self.pods.pop(uid, None)
            await asyncio.shield(self._teardown(n))
            raise
        return PodNet(lay.pod_ip(n), f"/run/netns/{lay.netns(n)}")

    async def _teardown(self, n: int) -> None:
        # deleting the host's veth takes its peer and the route at once; then the namespace
        self.tearing.add(n)
        try:
            with contextlib.suppress(NetworkError):
                await _arun(["ip", "-force", "-batch", "-"], _teardown_batch(self.layout, n))
        finally:
            self.tearing.discard(n)

    def finished(self, uid: str) -> None:
        """Kept until the pod is deleted (`release`): tearing the veth down right after the
        containers end can cut off the last bytes they sent (e.g. a sidecar's final events)."""

    def release(self, uid: str) -> None:
        n = self.pods.pop(uid, None)
        if n is not None:
            self.tearing.add(n)  # not handed out again before its teardown ends
            task = asyncio.ensure_future(self._teardown(n))
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
        for n in [*self.pods.values(), *self.tearing]:
            _run(["ip", "-force", "-batch", "-"], _teardown_batch(lay, n), check=False)
        self.pods.clear()
        with _locked(self.run_dir):
            found = parse_indexes(_run(["ip", "netns", "list"], check=False),
                                  _run(["ip", "-o", "link", "show"], check=False),
                                  _run(["nft", "list", "tables"], check=False))
            for kind, name in sorted(found.get(lay.index, []),
                                     key=lambda kn: KINDS.index(kn[0])):
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
