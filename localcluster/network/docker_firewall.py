"""The host side of pod isolation in docker mode: iptables INPUT rules per cluster.

Docker's ``--internal`` networks stop forwarding, but a pod on one can still reach every address
of the host itself (the bridge's gateway, any other interface). One rule pair per cluster, on the
cluster's internal bridges (``lc<cluster>i+``), rejects that, except replies to connections the
host opened (e.g. probes, a node on the host talking to a pod). Rules carry a comment with the
cluster and its owner (pid and start time), so `cleanup_host_guards` removes those of clusters
that are gone.

Within a cluster's internal networks (bridges ``lc<cluster>i<n>``) the pods' NetworkPolicies are
enforced by a chain per bridge (``LC-<bridge>``, jumped to from Docker's DOCKER-USER chain;
bridged traffic passes iptables where ``br_netfilter`` is on, as Docker needs it for its own
isolation): replies, then the allowed flows (source, destination, ports), then REJECT.
"""
from __future__ import annotations

import logging
import subprocess

from localcluster.network.netns_plan import NetworkError
from localcluster.runtime.docker import owner_alive, owner_id

log = logging.getLogger(__name__)
_COMMENT = "localcluster-docker"


def _iptables_rules(cluster: str) -> list[list[str]]:
    iface = f"lc{cluster}i+"
    tag = ["-m", "comment", "--comment", f"{_COMMENT} {cluster} {owner_id()}"]
    return [["INPUT", "-i", iface, *tag, "-j", "REJECT"],
            ["INPUT", "-i", iface, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", *tag,
             "-j", "ACCEPT"]]


def _iptables(args: list[str]) -> bool:
    try:
        return subprocess.run(["iptables", "-w", *args], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def check_bridge_filtering() -> None:
    """NetworkError unless bridged traffic passes iptables (else no pod rule would apply)."""
    path = "/proc/sys/net/bridge/bridge-nf-call-iptables"
    try:
        with open(path) as f:
            on = f.read().strip() == "1"
    except OSError:
        on = False
    if not on:
        raise NetworkError(f"bridged traffic does not pass iptables ({path} is not 1): run "
                           f"'modprobe br_netfilter' and 'sysctl -w "
                           f"net.bridge.bridge-nf-call-iptables=1'")


def add_host_guard(cluster: str) -> None:
    """NetworkError when the rules cannot be added (pods would reach the host unnoticed)."""
    for rule in _iptables_rules(cluster):  # each on top: replies first, then REJECT
        if not _iptables(["-I", *rule[:1], "1", *rule[1:]]):
            remove_host_guard(cluster)
            raise NetworkError(f"cannot add the iptables rule that keeps pods on internal "
                               f"networks from reaching the host: iptables {' '.join(rule)}")


def remove_host_guard(cluster: str) -> None:
    for rule in _iptables_rules(cluster):
        _iptables(["-D", *rule])


# --- traffic between pods on an internal network -----------------------------------------------

def chain_of(bridge: str) -> str:
    return f"LC-{bridge}"


def _jump(bridge: str, cluster: str) -> list[str]:
    return ["DOCKER-USER", "-i", bridge, "-o", bridge, "-m", "comment", "--comment",
            f"{_COMMENT} {cluster} {owner_id()}", "-j", chain_of(bridge)]


def _port_match(entry: tuple) -> str:
    proto, port, end = entry
    if proto == "*":
        return ""
    match = f" -p {proto.lower()}"
    if port is not None:
        match += f" --dport {port}" + (f":{end}" if end else "")
    return match


def chain_rules(bridge: str, flows: list[tuple[str, str, frozenset]]) -> str:
    """iptables-restore input (pure): the network's chain lets through replies and the flows
    (source IP, destination IP, ports), and rejects everything else."""
    chain = chain_of(bridge)
    lines = ["*filter", f":{chain} - [0:0]",
             f"-A {chain} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"]
    for src, dst, ports in sorted(flows, key=lambda f: (f[0], f[1])):
        for entry in sorted(ports, key=str):
            lines.append(f"-A {chain} -s {src}/32 -d {dst}/32{_port_match(entry)} -j ACCEPT")
    lines += [f"-A {chain} -j REJECT", "COMMIT", ""]
    return "\n".join(lines)


def set_flows(bridge: str, cluster: str, flows: list[tuple[str, str, frozenset]]) -> None:
    """Replace the chain's rules at once (iptables-restore); hook it into DOCKER-USER, which the
    engine runs before its own rule that lets all traffic within a bridge through."""
    try:
        done = subprocess.run(["iptables-restore", "-w", "--noflush"],
                              input=chain_rules(bridge, flows), capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetworkError(f"iptables-restore: {e}") from e
    if done.returncode != 0:
        raise NetworkError(f"iptables-restore failed for {bridge}: {done.stderr.strip()}")
    jump = _jump(bridge, cluster)
    if not _iptables(["-C", *jump]) and not _iptables(["-I", jump[0], "1", *jump[1:]]):
        raise NetworkError(f"cannot hook the rules of {bridge} into DOCKER-USER")


def remove_flows(bridge: str, cluster: str) -> None:
    _iptables(["-D", *_jump(bridge, cluster)])
    _iptables(["-F", chain_of(bridge)])
    _iptables(["-X", chain_of(bridge)])


def cleanup_host_guards(cluster: str | None = None) -> list[str]:
    """Remove the rules of clusters whose process is gone (or of `cluster`)."""
    removed = []
    for table_chain in ("INPUT", "DOCKER-USER"):
        try:
            out = subprocess.run(["iptables", "-w", "-S", table_chain], capture_output=True,
                                 text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return removed
        for line in out.splitlines():
            if _COMMENT not in line:
                continue
            parts = line.split()
            try:
                comment = line.split('--comment "', 1)[1].split('"', 1)[0].split()
            except IndexError:
                continue
            if len(comment) != 3 or (comment[1] != cluster if cluster
                                     else owner_alive(comment[2])):
                continue
            if _iptables(["-D", *[p.strip('"') for p in _respace(parts[1:])]]):
                removed.append(f"iptables {table_chain} {comment[1]}")
            if "-j" in parts and parts[parts.index("-j") + 1].startswith("LC-"):
                target = parts[parts.index("-j") + 1]
                _iptables(["-F", target])
                _iptables(["-X", target])
    return removed


def _respace(parts: list[str]) -> list[str]:
    """`iptables -S` quotes the comment; rejoin its words as one argument."""
    out: list[str] = []
    buf: list[str] | None = None
    for p in parts:
        if buf is not None:
            buf.append(p)
            if p.endswith('"'):
                out.append(" ".join(buf).strip('"'))
                buf = None
        elif p.startswith('"') and not (p.endswith('"') and len(p) > 1):
            buf = [p]
        else:
            out.append(p)
    return out
