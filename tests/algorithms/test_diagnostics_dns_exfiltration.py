"""The DNS-exfiltration probe both ways, in network namespaces this test makes (root, `ip`, `nft`;
skipped otherwise, failed in CI): an algorithm pod, a kube-dns pod running a fake upstream
resolver of our own (tests/support/fake_resolver.py) and a proxy pod. The pod's NetworkPolicy is
enforced with nftables inside the pod's namespace, as a CNI would, by tests/support/netpol_nft.py.

- The prototype's policy (egress to the proxy AND to kube-system k8s-app=kube-dns on 53): the
  probe reports the leak, and the fake resolver received the probe's name.
- Ours (egress only to the proxy's pods): every resolver refused, the fake resolver saw nothing.
- The project's policies as deployed (kubeconfs/base and the node's own, read from the tree):
  the same, so a DNS rule coming back would fail here.
Both times the proxy is reachable. No packet leaves the test's namespaces: the pod namespace has
links to the other two only and no default route."""
from __future__ import annotations

import json
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from localcluster.testing import require_isolation, wait_until
from tests.support.netpol_nft import PodInfo, egress_rules, nft_script

from .helpers import REPO, make_pod

POD_IP, DNS_IP, PUBLIC_IP = "10.253.1.2", "10.253.1.53", "10.253.1.99"
POD_PROXY_IP, PROXY_IP, PROXY_PORT = "10.253.2.2", "10.253.2.80", 8080
DNS_POD = PodInfo("kube-system", {"k8s-app": "kube-dns"}, DNS_IP)
PROXY_POD = PodInfo("v6-node", {"app": "v6-proxy"}, PROXY_IP)
ALGORITHM_POD = PodInfo("v6-jobs", {"app.kubernetes.io/managed-by": "v6-node"}, POD_IP)


def _policy(name: str, egress: list[dict]) -> dict:
    return {"metadata": {"name": name, "namespace": "v6-jobs"},
            "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "v6-node"}},
                     "policyTypes": ["Egress"], "egress": egress}}


DEFAULT_DENY = {"metadata": {"name": "v6-jobs-default-deny", "namespace": "v6-jobs"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
NS = "kubernetes.io/metadata.name"
TO_PROXY = {"to": [{"namespaceSelector": {"matchLabels": {NS: "v6-node"}},
                    "podSelector": {"matchLabels": {"app": "v6-proxy"}}}],
            "ports": [{"protocol": "TCP", "port": PROXY_PORT}]}
TO_KUBE_DNS = {"to": [{"namespaceSelector": {"matchLabels": {NS: "kube-system"}},
                       "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
               "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
# The prototype's kubeconfs/base/network-policies.yaml and node policy: DNS allowed.
OLD_POLICIES = [DEFAULT_DENY, _policy("v6-algorithms-egress", [TO_PROXY, TO_KUBE_DNS])]
# Issue 13: the proxy's pods, nothing else.
OUR_POLICIES = [DEFAULT_DENY, _policy("v6-algorithms-egress", [TO_PROXY])]

PROXY_SCRIPT = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/api/version"
        body = json.dumps({"version": "6.0.0-test"} if ok else {"error": "no"}).encode()
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
server = HTTPServer((sys.argv[1], int(sys.argv[2])), H)
print("ready", flush=True)
server.serve_forever()
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@dataclass
class Namespaces:
    pod: str
    dns: str
    proxy: str
    record: Path     # the names the fake resolver was asked, one a line

    def path(self, name: str) -> str:
        return f"/run/netns/{name}"

    def asked(self) -> list[str]:
        return self.record.read_text().split() if self.record.exists() else []

    def enforce(self, policies: list[dict], pod: PodInfo = ALGORITHM_POD) -> None:
        rules = egress_rules(policies, pod, [DNS_POD, PROXY_POD])
        subprocess.run(["ip", "netns", "exec", self.pod, "nft", "-f", "-"], check=True,
                       input=f"flush ruleset\n{nft_script(rules)}", text=True, timeout=30)


def _start(netns: str, argv: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{netns}", *argv], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # "ready ..." once listening; EOF if it died
    if not line.startswith("ready"):
        proc.kill()
        proc.wait()
        pytest.fail(f"{argv[:3]} did not start in {netns} (exit {proc.poll()})")
    return proc


@pytest.fixture
def namespaces(tmp_path):
    require_isolation()
    tag = secrets.token_hex(3)
    ns = Namespaces(f"v6dx-{tag}-pod", f"v6dx-{tag}-dns", f"v6dx-{tag}-px", tmp_path / "asked")
    made, procs = [], []
    try:
        for name in (ns.pod, ns.dns, ns.proxy):
            ip("netns", "add", name)
            made.append(name)
        ip("-n", ns.pod, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
           "netns", ns.dns)
        ip("-n", ns.pod, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0",
           "netns", ns.proxy)
        links = ((ns.pod, "eth0", [POD_IP]), (ns.pod, "eth1", [POD_PROXY_IP]),
                 (ns.dns, "eth0", [DNS_IP, PUBLIC_IP]), (ns.proxy, "eth0", [PROXY_IP]))
        for name, dev, addresses in links:
            for address in addresses:
                ip("-n", name, "addr", "add", f"{address}/24", "dev", dev)
            ip("-n", name, "link", "set", dev, "up")
            ip("-n", name, "link", "set", "lo", "up")
        procs.append(_start(ns.dns, [sys.executable, "-m", "tests.support.fake_resolver", "0.0.0.0",
                                     "53", str(ns.record)]))
        procs.append(_start(ns.proxy, [sys.executable, "-c", PROXY_SCRIPT, PROXY_IP,
                                       str(PROXY_PORT)]))
        yield ns
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        for name in made:  # deleting a namespace deletes its links (and their peers)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def run_diagnostics(ns: Namespaces, tmp_path: Path) -> dict[str, dict]:
    """The real algorithm in the pod namespace, with a resolv.conf as dnsConfig / ClusterFirst
    would give it (bound over /etc/resolv.conf in a private mount namespace)."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {DNS_IP}\noptions timeout:1 attempts:1\n")
    pod = make_pod(tmp_path / f"pod-{secrets.token_hex(2)}", token="container-token",
                   proxy_port=PROXY_PORT)
    pod.env.update({"HOST": f"http://{PROXY_IP}",
                    "KUBE_DNS_SERVICE_HOST": DNS_IP, "KUBE_DNS_SERVICE_PORT_DNS": "53",
                    # a "well-known public resolver" stand-in, inside the test's namespaces
                    "V6_DIAG_DNS_RESOLVERS": f"{PUBLIC_IP}:53"})
    pod.write_input({"probes": {"dns_system": True, "timeout": 1}})
    script = (f"mount --make-rprivate / && mount --bind {resolv} /etc/resolv.conf && "
              f"exec {sys.executable} -m algorithms.diagnostics")
    done = subprocess.run(["nsenter", f"--net={ns.path(ns.pod)}", "unshare", "--mount",
                           "sh", "-c", script], env=pod.env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {c["name"]: c for c in json.loads(pod.output_file.read_text())}


def test_old_dns_policy_leaks_and_ours_does_not(namespaces, tmp_path):
    ns = namespaces
    kube_dns, public = f"dns_exfiltration:{DNS_IP}:53", f"dns_exfiltration:{PUBLIC_IP}:53"

    ns.enforce(OLD_POLICIES)
    old = run_diagnostics(ns, tmp_path)
    assert old["proxy_api_version"]["ok"] is True, old["proxy_api_version"]
    assert old["dns_exfiltration"]["ok"] is False, old["dns_exfiltration"]
    assert old[kube_dns]["ok"] is False
    assert "udp answered: NOERROR" in old[kube_dns]["detail"]
    assert "tcp answered: NOERROR" in old[kube_dns]["detail"]
    assert old["dns_exfiltration:getaddrinfo"]["ok"] is False
    # the policy allows kube-dns only: the other resolver address is refused even so
    assert old[public]["ok"] is True, old[public]
    # the fake upstream saw the probe's unique name, the one the report names
    probe_names = wait_until(ns.asked, 5, "the fake resolver's record")
    assert len(set(probe_names)) == 1 and probe_names[0] in old["dns_exfiltration"]["detail"]
    assert probe_names[0].endswith(".v6-exfil-probe.invalid")
    seen_before = len(probe_names)

    ns.enforce(OUR_POLICIES)
    ours = run_diagnostics(ns, tmp_path)
    assert ours["proxy_api_version"]["ok"] is True, ours["proxy_api_version"]
    assert ours["dns_exfiltration"]["ok"] is True, ours["dns_exfiltration"]
    assert ours["dns_exfiltration"]["detail"].startswith("no reachable resolver")
    for name in (kube_dns, public, "dns_exfiltration:getaddrinfo"):
        assert ours[name]["ok"] is True, ours[name]
    assert "udp refused" in ours[kube_dns]["detail"] and "tcp refused" in ours[kube_dns]["detail"]
    # refused before it left the pod: the fake resolver was asked nothing new
    assert len(ns.asked()) == seen_before


def project_policies() -> tuple[PodInfo, list[dict]]:
    """The algorithm pod as the node labels it, and the v6-jobs policies it is under: those of
    kubeconfs/base plus the node's own (node.manifests.build_network_policy)."""
    import yaml

    from node.config import parse_config
    from node.manifests import build_network_policy, node_labels
    from node.proxy_address import ProxyAddress
    config = parse_config({"node_id": "node-a", "api_key": "k",
                           "server_url": "http://127.0.0.1:5000", "task_dir": "/tasks",
                           "databases": [{"label": "default", "uri": "/d.csv", "type": "csv"}],
                           "images": {"allowed": ["v6-demo/*"]}, "live": {"enabled": False}}, {})
    address = ProxyAddress(cluster_ip="10.96.0.10", port=80, target_port=PROXY_PORT)
    docs = yaml.safe_load_all((REPO / "kubeconfs/base/network-policies.yaml").read_text())
    policies = [d for d in docs if d and d["kind"] == "NetworkPolicy"
                and d["metadata"]["namespace"] == "v6-jobs"]
    pod = PodInfo("v6-jobs", node_labels("node-a"), POD_IP)
    return pod, policies + [build_network_policy(config, address)]


def test_the_project_policies_let_no_query_out(namespaces, tmp_path):
    """What is deployed (kubeconfs/ and the node's policy together) leaks nothing either."""
    pod, policies = project_policies()
    rules = egress_rules(policies, pod, [DNS_POD, PROXY_POD])
    assert rules and set(rules) == {f"ip daddr {PROXY_IP} tcp dport {PROXY_PORT} accept"}
    namespaces.enforce(policies, pod)
    report = run_diagnostics(namespaces, tmp_path)
    assert report["proxy_api_version"]["ok"] is True, report["proxy_api_version"]
    assert report["dns_exfiltration"]["ok"] is True, report["dns_exfiltration"]
    assert namespaces.asked() == []


# -- the policy translation (pure: runs everywhere) ----------------------------------------------

def test_old_policy_allows_kube_dns_and_ours_only_the_proxy():
    pods = [DNS_POD, PROXY_POD]
    assert egress_rules(OLD_POLICIES, ALGORITHM_POD, pods) == [
        f"ip daddr {PROXY_IP} tcp dport {PROXY_PORT} accept",
        f"ip daddr {DNS_IP} udp dport 53 accept", f"ip daddr {DNS_IP} tcp dport 53 accept"]
    assert egress_rules(OUR_POLICIES, ALGORITHM_POD, pods) == [
        f"ip daddr {PROXY_IP} tcp dport {PROXY_PORT} accept"]
    script = nft_script(["ip daddr 10.0.0.1 tcp dport 1 accept"])
    assert script.index("accept\n    meta l4proto tcp reject") > script.index("10.0.0.1")


@pytest.mark.parametrize("policy, says", [
    (_policy("x", [{"to": [{"podSelector": {"matchExpressions": []}}]}]), "matchLabels"),
    (_policy("x", [{"ports": [{"protocol": "SCTP", "port": 1}]}]), "TCP/UDP"),
    ({"metadata": {"name": "y", "namespace": "other"}, "spec": {"policyTypes": ["Egress"]}},
     "no policy")])
def test_policy_features_not_enforced_are_refused(policy, says):
    from tests.support.netpol_nft import PolicyError
    with pytest.raises(PolicyError, match=says):
        egress_rules([policy], ALGORITHM_POD, [DNS_POD, PROXY_POD])
