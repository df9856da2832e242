"""Who may talk to whom, as computed by np-guard's network-config-analyzer (`nca`) from the
NetworkPolicies, Namespaces and workloads — offline, without a cluster.

`topology()` builds the cluster the analyzer sees: the rendered kubeconfs/ objects, the Job and
NetworkPolicy the node generates, cluster DNS and a bystander pod in kube-system, a pod of another
tenant, and a stray pod in the jobs namespace. `analyze()` runs nca (`--connectivity`, output
`txt_no_fw_rules`: one line per allowed pair) and parses the result; `isolation_problems()` lists
every way the result breaks the isolation rules.
"""
from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ALL = "All connections"
_LINE = re.compile(r"^(?P<src>\S+) => (?P<dst>\S+) : (?P<conn>.+)$")
_CUBE = re.compile(r"\{protocols:(?P<protocols>[A-Z]+(?:, ?[A-Z]+)*)(?:,dst_ports:(?P<ports>[0-9,\- ]+))?\}")
ALL_PORTS = range(1, 65536)


class AnalyzerError(Exception):
    pass


def _ports(text: str | None) -> set[int]:
    if text is None:  # a protocol without ports: all of them
        return set(ALL_PORTS)
    ports: set[int] = set()
    for part in text.replace(" ", "").split(","):
        low, _, high = part.partition("-")
        ports.update(range(int(low), int(high or low) + 1))
    return ports


@dataclass(frozen=True)
class Conn:
    """Allowed connections of one pair: everything, or a set of (protocol, port) pairs."""
    all: bool
    pairs: frozenset[tuple[str, int]] = frozenset()

    @classmethod
    def parse(cls, text: str) -> "Conn":
        text = text.strip()
        if text == ALL:
            return cls(True)
        rest = _CUBE.sub("", text).strip(" ;,")
        if rest or not _CUBE.search(text):  # an unknown format must fail the check, not pass it
            raise AnalyzerError(f"cannot parse connection set {text!r}")
        pairs = set()
        for m in _CUBE.finditer(text):
            for proto in m["protocols"].split(","):
                pairs.update((proto.strip(), port) for port in _ports(m["ports"]))
        return cls(False, frozenset(pairs))

    def __str__(self) -> str:
        if self.all:
            return ALL
        out = []
        for proto in sorted({p for p, _ in self.pairs}):
            ports = sorted(port for p, port in self.pairs if p == proto)
            shown = f"{ports[0]}-{ports[-1]}" if len(ports) > 3 and ports[-1] - ports[0] == len(ports) - 1 \
                else ",".join(map(str, ports))
            out.append(f"{proto}/{shown}")
        return ", ".join(out)


def tcp(*ports: int) -> Conn:
    return Conn(False, frozenset(("TCP", p) for p in ports))


DNS = Conn(False, frozenset({("TCP", 53), ("UDP", 53)}))
JOBS_NAMESPACE = "v6-jobs"


def _pod(namespace: str, name: str, labels: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": "main", "image": "registry.invalid/stand-in"}]}}


def _namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {}}}


# Endpoint names as nca prints them.
DNS_POD = "kube-system/coredns[Pod]"
KUBE_SYSTEM_BYSTANDER = "kube-system/metrics-server[Pod]"
OTHER_TENANT = "other-tenant/web[Pod]"
STRAY_JOBS_POD = "v6-jobs/stray[Pod]"


def topology(manifests: list[dict], generated: list[dict]) -> list[dict]:
    """What the analyzer sees: namespaces (with the name label the API server adds), workloads and
    policies of the manifests, the node's generated objects, and the stand-ins above."""
    keep = ("Namespace", "Deployment", "StatefulSet", "DaemonSet", "Job", "Pod", "NetworkPolicy")
    objects = [o for o in manifests + generated if o["kind"] in keep]
    objects += [_namespace("kube-system"), _namespace("other-tenant"),
                _pod("kube-system", "coredns", {"k8s-app": "kube-dns"}),
                _pod("kube-system", "metrics-server", {"k8s-app": "metrics-server"}),
                _pod("other-tenant", "web", {"app": "web"}),
                _pod("v6-jobs", "stray", {"app": "stray"})]
    for o in objects:
        if o["kind"] == "Namespace":
            o.setdefault("metadata", {}).setdefault("labels", {})["kubernetes.io/metadata.name"] = o["metadata"]["name"]
    return objects


@dataclass(frozen=True)
class Connectivity:
    edges: dict[tuple[str, str], Conn]

    def from_(self, src: str) -> dict[str, Conn]:
        return {d: c for (s, d), c in self.edges.items() if s == src}

    def to(self, dst: str) -> dict[str, Conn]:
        return {s: c for (s, d), c in self.edges.items() if d == dst}

    def endpoints(self) -> set[str]:
        return {e for pair in self.edges for e in pair}


def parse_output(text: str) -> Connectivity:
    edges = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _LINE.match(line.strip())
        if not m:
            raise AnalyzerError(f"unexpected nca output line: {line!r}")
        edges[(m["src"], m["dst"])] = Conn.parse(m["conn"])
    return Connectivity(edges)


def analyze(objects: list[dict], workdir: Path) -> Connectivity:
    """Run nca's connectivity query on the objects. In-process: importing nca takes ~2 s, a query
    ~0.1 s (test_analyses_do_not_leak_into_each_other guards against state kept between calls)."""
    from nca.nca_cli import nca_main
    workdir.mkdir(parents=True, exist_ok=True)
    resources = workdir / "cluster.yaml"
    resources.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    out = workdir / "connectivity.txt"
    messages = io.StringIO()
    with contextlib.redirect_stdout(messages), contextlib.redirect_stderr(messages):
        code = nca_main(["--connectivity", "-r", str(resources), "-o", "txt_no_fw_rules", "-f", str(out)])
    text = messages.getvalue()
    if code != 0 or not out.is_file() or "Error" in text:
        raise AnalyzerError(f"nca failed ({code}):\n{text[-3000:]}")
    return parse_output(out.read_text())


def is_ip_block(endpoint: str) -> bool:
    return bool(re.match(r"^[0-9a-fA-F.:]+-[0-9a-fA-F.:]+$|^[0-9a-fA-F.:]+/[0-9]+$", endpoint))


@dataclass(frozen=True)
class Roles:
    algorithm: str        # the generated Job, e.g. "v6-jobs/v6-run-7-node-a[Job]"
    node: str = "v6-node/v6-node[Deployment]"
    proxy: str = "v6-node/v6-proxy[Deployment]"
    proxy_port: int = 8080
    live_ports: tuple[int, ...] = ()   # the live channel: the node may reach the sidecar's ports


def isolation_problems(conn: Connectivity, roles: Roles) -> list[str]:
    """Every way `conn` breaks the rules; [] when algorithm pods are isolated as required."""
    problems = []
    # nca lists only pairs with some connection. The proxy must be reachable, so a wrong
    # endpoint name cannot pass unnoticed: it fails the "needed" check below. No DNS: a resolver
    # forwards any name upstream, so data could leave in the queries (issue 13).
    allowed = {roles.proxy: tcp(roles.proxy_port)}
    for dst, c in sorted(conn.from_(roles.algorithm).items()):
        if dst not in allowed:
            what = "outside the cluster" if is_ip_block(dst) else dst
            problems.append(f"algorithm pods may reach {what}: {c}")
        elif c != allowed[dst]:
            problems.append(f"algorithm pods may reach {dst} with {c}, expected only {allowed[dst]}")
    for dst, c in allowed.items():
        if dst not in conn.from_(roles.algorithm):
            problems.append(f"algorithm pods cannot reach {dst} ({c}) — needed")
    # Nothing reaches algorithm pods, except the node on the live channel's ports when it is on.
    ingress_allowed = {roles.node: tcp(*roles.live_ports)} if roles.live_ports else {}
    for src, c in sorted(conn.to(roles.algorithm).items()):
        if src in ingress_allowed and c == ingress_allowed[src]:
            continue
        problems.append(f"{'outside the cluster' if is_ip_block(src) else src} may reach algorithm pods: {c}")
    if (roles.algorithm, roles.node) in conn.edges:
        problems.append(f"the node is reachable from algorithm pods: {conn.edges[(roles.algorithm, roles.node)]}")
    # Nothing in v6-jobs may send to port 53, anywhere (whichever pod, whichever destination).
    for (s, d), c in sorted(conn.edges.items()):
        if s.startswith(f"{JOBS_NAMESPACE}/") and (c.all or any(port == 53 for _, port in c.pairs)):
            problems.append(f"{s} may send to port 53 of {'outside the cluster' if is_ip_block(d) else d}")
    # The stray pod in the jobs namespace shows the namespace's default deny.
    for (s, d), c in sorted(conn.edges.items()):
        if STRAY_JOBS_POD in (s, d):
            problems.append(f"default deny in v6-jobs broken: {s} => {d}: {c}")
    # Only algorithm pods reach the proxy.
    for src, c in sorted(conn.to(roles.proxy).items()):
        if src != roles.algorithm:
            problems.append(f"{src} may reach the proxy: {c}")
    return problems
