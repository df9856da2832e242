"""NetworkPolicy enforcement by Docker networks (docker mode): the plan (pure) and real pods
reaching, or not, each other. The engine tests skip (reason printed) without Docker/root."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from localcluster.runtime.docker_client import SyncDocker
from localcluster.network.docker_net_plan import PodInfo, PodPlan, PolicyUnsupported, plan
from localcluster.kubelet.kubelet import read_log
from localcluster.apiserver.resources import NAMESPACES, NETWORKPOLICIES, PODS, SERVICES

from .docker_fixtures import docker_images, pod, run_docker  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]
PROJECT_POLICIES = [d for d in yaml.safe_load_all(
    (REPO / "kubeconfs/base/network-policies.yaml").read_text()) if d]
ALGO_LABELS = {"app.kubernetes.io/managed-by": "v6-node"}
PROXY_SERVICE = {"metadata": {"name": "v6-proxy", "namespace": "v6-node"},
                 "spec": {"selector": {"app": "v6-proxy"},
                          "ports": [{"name": "http", "port": 8080, "targetPort": "http"}]}}

OTHER_SERVICE = {"metadata": {"name": "other", "namespace": "default"},
                 "spec": {"selector": {"app": "other"}, "ports": [{"port": 8080}]}}


def _allow_egress_to_other() -> dict:
    """A policy that opens the algorithm pods' egress to the 'other' pods (any namespace)."""
    return {"metadata": {"name": "open-egress", "namespace": "v6-jobs"},
            "spec": {"podSelector": {"matchLabels": ALGO_LABELS}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"namespaceSelector": {},
                                         "podSelector": {"matchLabels": {"app": "other"}}}]}]}}


# --- the plan (pure) --------------------------------------------------------------------------

ALGO = PodInfo("a1", "algo", "v6-jobs", ALGO_LABELS)
ALGO2 = PodInfo("a2", "algo2", "v6-jobs", ALGO_LABELS)
PROXY = PodInfo("p1", "proxy", "v6-node", {"app": "v6-proxy"}, {"http": 8080})
OTHER = PodInfo("o1", "other", "default", {"app": "other"})
OPEN = PodInfo("o2", "open", "default", {})


def _shared(plans, a, b) -> set[str]:
    return set(plans[a.uid].networks) & set(plans[b.uid].networks)


def test_the_project_policies_give_algorithm_pods_only_the_proxy():
    plans = plan([ALGO, ALGO2, PROXY, OTHER, OPEN], PROJECT_POLICIES, [PROXY_SERVICE], {})
    assert all(isinstance(p, PodPlan) for p in plans.values())
    assert plans[ALGO.uid].home.internal and not plans[PROXY.uid].home.internal
    assert _shared(plans, ALGO, PROXY) and _shared(plans, ALGO2, PROXY)
    # nothing else: not each other, not open pods, and the proxy network is not the default
    for x, y in ((ALGO, ALGO2), (ALGO, OTHER), (ALGO, OPEN)):
        assert not _shared(plans, x, y), (x.name, y.name)
    # the proxy's egress is open: it may reach open pods (on a network of their own, not the
    # default one, since its ingress is restricted)
    assert _shared(plans, PROXY, OTHER) and "default" not in plans[PROXY.uid].networks
    assert all(n.internal for k, n in plans[ALGO.uid].networks.items())
    assert _shared(plans, OTHER, OPEN) == {"default"}
    assert "v6-proxy.v6-node.svc.cluster.local" in plans[PROXY.uid].aliases


def test_a_policy_opening_egress_shares_a_network_with_the_target():
    plans = plan([ALGO, OTHER], PROJECT_POLICIES + [_allow_egress_to_other()], [], {})
    assert _shared(plans, ALGO, OTHER)


def test_the_nodes_own_policy_with_the_live_channel_lets_the_node_reach_the_pod_ip():
    policy = {"metadata": {"name": "node-1", "namespace": "v6-jobs"}, "spec": {
        "podSelector": {"matchLabels": ALGO_LABELS}, "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "v6-node"}}, "podSelector": {"matchLabels": {
                "app": "v6-node"}}}], "ports": [{"protocol": "TCP", "port": 5555}]}],
        "egress": []}}
    node = PodInfo("n1", "node", "v6-node", {"app": "v6-node"})
    plans = plan([ALGO, node, PROXY], PROJECT_POLICIES + [policy], [], {})
    assert plans[ALGO.uid].home.key in plans[node.uid].networks  # the pod IP's network
    assert not _shared(plans, node, PROXY)


@pytest.mark.parametrize("egress, words", [
    ([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}], "ipBlock 0.0.0.0/0"),
    ([{"ports": [{"port": 443}]}], "any destination on ports [443]"),
])
def test_unsupported_shapes_are_refused_with_the_reason(egress, words):
    policy = {"metadata": {"name": "wide", "namespace": "v6-jobs"},
              "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": egress}}
    plans = plan([ALGO, OTHER], [policy], [], {})
    assert isinstance(plans[ALGO.uid], PolicyUnsupported)
    assert words in str(plans[ALGO.uid]) and "wide" in str(plans[ALGO.uid])
    assert isinstance(plans[OTHER.uid], PodPlan)  # other namespaces are not concerned


def test_dns_only_rules_need_no_network_and_a_service_with_another_port_is_not_served():
    policy = {"metadata": {"name": "dns", "namespace": "v6-jobs"},
              "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                       "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}}
    svc = {"metadata": {"name": "remap", "namespace": "default"},
           "spec": {"selector": {"app": "other"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    plans = plan([ALGO, OTHER], [policy], [svc], {})
    assert list(plans[ALGO.uid].networks) == [plans[ALGO.uid].home.key]
    assert plans[OTHER.uid].aliases == ()
    assert "port must equal targetPort" in plans[OTHER.uid].warnings[0]


def test_a_networks_chain_lets_through_replies_and_the_allowed_flows_only():
    from localcluster.network.docker_firewall import chain_rules
    text = chain_rules("lcabc123i1", [("10.0.0.2", "10.0.0.3", frozenset({("TCP", 8080, None)})),
                                      ("10.0.0.4", "10.0.0.3", frozenset({("*", None, None)}))])
    assert text.splitlines() == [
        "*filter", ":LC-lcabc123i1 - [0:0]",
        "-A LC-lcabc123i1 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        "-A LC-lcabc123i1 -s 10.0.0.2/32 -d 10.0.0.3/32 -p tcp --dport 8080 -j ACCEPT",
        "-A LC-lcabc123i1 -s 10.0.0.4/32 -d 10.0.0.3/32 -j ACCEPT",
        "-A LC-lcabc123i1 -j REJECT", "COMMIT"]


def test_the_plan_keeps_the_ports_both_sides_allow():
    plans = plan([ALGO, PROXY], PROJECT_POLICIES, [], {})
    (key, src, ports), = plans[PROXY.uid].inbound
    assert src == ALGO.uid and key in plans[ALGO.uid].networks
    assert ports == frozenset({("TCP", 8080, None)})
    assert plans[ALGO.uid].inbound == []  # nothing may connect to the algorithm pod


# --- real pods ------------------------------------------------------------------------------

SERVE = """
import select, signal, socket, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
socks = []
for port in (8080, 9090):  # 8080: what the policies allow; 9090: another port of the pod
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', port)); s.listen(); socks.append(s)
print('listening', flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        c, _ = s.accept(); c.sendall(b'%s'); c.close()
"""

CHECK = """
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(':', 1)
    try:
        c = socket.create_connection((host, int(port)), timeout=1.5)
    except OSError as e:
        print(target, 'blocked', type(e).__name__, flush=True)
        continue
    try:
        print(target, 'reached', c.recv(64).decode(), flush=True)
    except OSError:
        print(target, 'reached (no reply)', flush=True)
"""


def _serving(name: str, ns: str, image: str, labels: dict, reply: str) -> dict:
    p = pod(name, image, args=["-c", SERVE % reply], labels=labels,
            ports=[{"name": "http", "containerPort": 8080}])
    p["metadata"]["namespace"] = ns
    return p


async def _setup(h, images, extra_policies=()):
    for ns in ("v6-node", "v6-jobs"):
        h.store.create(NAMESPACES, None, {"metadata": {"name": ns}})
    for pol in PROJECT_POLICIES + list(extra_policies):
        h.store.create(NETWORKPOLICIES, pol["metadata"]["namespace"], pol)
    h.store.create(SERVICES, "v6-node", PROXY_SERVICE)
    h.store.create(SERVICES, "default", OTHER_SERVICE)
    h.store.create(PODS, "v6-node", _serving("proxy", "v6-node", images["python"],
                                             {"app": "v6-proxy"}, "proxy"))
    h.store.create(PODS, "default", _serving("other", "default", images["python"],
                                             {"app": "other"}, "other"))
    for name, ns in (("proxy", "v6-node"), ("other", "default")):
        await h.until(lambda: "running" in h.container_state(name, ns) and read_log(
            h.state_dir, h.pod(name, ns)) == "listening\n", what=f"{name} listening",
            timeout=60)
    return h.pod("other")["status"]["podIP"]


async def _check(h, images, targets: list[str]) -> dict[str, str]:
    h.store.create(PODS, "v6-jobs", {**pod("algo", images["python"], args=["-c", CHECK, *targets],
                                           labels=dict(ALGO_LABELS)),
                                     "metadata": {"name": "algo", "namespace": "v6-jobs",
                                                  "labels": dict(ALGO_LABELS)}})
    await h.until(lambda: ((h.pod("algo", "v6-jobs") or {}).get("status") or {}).get("phase")
                  in ("Succeeded", "Failed"), what="algo done", timeout=60)
    lines = read_log(h.state_dir, h.pod("algo", "v6-jobs")).splitlines()
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in lines}


def _host_server(ip: str):
    """A TCP server of this host on a Docker bridge's address (which pods could route to)."""
    srv = socket.create_server((ip, 0))
    srv.settimeout(0.2)
    return srv


def test_an_algorithm_pod_reaches_the_proxy_by_name_and_nothing_else(tmp_path, docker_images):
    async def body(h, net):
        other_ip = await _setup(h, docker_images)
        proxy_ip = h.pod("proxy", "v6-node")["status"]["podIP"]
        # the host itself, on the address it has in the open pods' network
        default = SyncDocker().request("GET", f"/networks/lc-{net.cluster}-default")
        gateway = default["IPAM"]["Config"][0]["Gateway"]
        with _host_server(gateway) as srv:
            host_target = f"{gateway}:{srv.getsockname()[1]}"
            got = await _check(h, docker_images, [
                "v6-proxy.v6-node.svc.cluster.local:8080", "v6-proxy:8080", f"{other_ip}:8080",
                "other.default:8080", f"{proxy_ip}:8080", host_target, "v6-proxy:9090"])
        assert got[host_target].startswith("blocked")
        # the proxy pod listens on 9090 too, which the policies do not allow
        assert got["v6-proxy:9090"] == "blocked ConnectionRefusedError"
        assert got["v6-proxy.v6-node.svc.cluster.local:8080"] == "reached proxy"
        assert got["v6-proxy:8080"] == "reached proxy"
        assert got[f"{other_ip}:8080"] == "blocked TimeoutError"
        assert got["other.default:8080"].startswith("blocked")  # not even resolved
        # the proxy's pod IP is on its own network: reached by Service name only
        assert got[f"{proxy_ip}:8080"].startswith("blocked")
    run_docker(tmp_path, body)


def test_a_policy_that_opens_egress_makes_the_isolation_check_fail(tmp_path, docker_images):
    async def body(h, net):
        await _setup(h, docker_images, [_allow_egress_to_other()])
        got = await _check(h, docker_images, ["other.default.svc.cluster.local:8080"])
        assert got["other.default.svc.cluster.local:8080"] == "reached other"
    run_docker(tmp_path, body)


def test_an_unsupported_policy_keeps_the_pod_from_starting(tmp_path, docker_images):
    async def body(h, net):
        h.store.create(NETWORKPOLICIES, "default", {
            "metadata": {"name": "to-cidr"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}})
        h.store.create(PODS, "default", pod("refused", docker_images["python"],
                                            args=["-c", "print('ran')"]))
        await h.until(lambda: any(e["reason"] == "NetworkPolicyUnsupported"
                                  for e in h.events("refused")), what="refusal event")
        event = next(e for e in h.events("refused") if e["reason"] == "NetworkPolicyUnsupported")
        assert event["type"] == "Warning"
        assert "to-cidr" in event["message"] and "ipBlock 10.0.0.0/8" in event["message"]
        pod_now = h.pod("refused")
        assert pod_now["status"]["phase"] == "Pending" and "podIP" not in pod_now["status"]
        # removing the policy lets it start (the kubelet retries)
        h.store.delete(NETWORKPOLICIES, "default", "to-cidr")
        await h.until(lambda: (h.pod("refused")["status"]).get("phase") == "Succeeded",
                      what="Succeeded after the policy is gone", timeout=60)
    run_docker(tmp_path, body)


def test_a_pod_with_egress_denied_is_alone_on_an_internal_network_the_host_reaches(
        tmp_path, docker_images):
    async def body(h, net):
        h.store.create(NETWORKPOLICIES, "default", {
            "metadata": {"name": "deny-egress"},
            "spec": {"podSelector": {"matchLabels": {"app": "closed"}},
                     "policyTypes": ["Egress"]}})
        h.store.create(PODS, "default", _serving("other", "default", docker_images["python"],
                                                 {"app": "other"}, "other"))
        h.store.create(PODS, "default", _serving("closed", "default", docker_images["python"],
                                                 {"app": "closed"}, "closed"))
        for name in ("other", "closed"):
            await h.until(lambda: "running" in h.container_state(name) and read_log(
                h.state_dir, h.pod(name)) == "listening\n", what=f"{name} listening",
                timeout=60)
        closed_ip = h.pod("closed")["status"]["podIP"]
        other_ip = h.pod("other")["status"]["podIP"]
        # the host (as a node's probes) reaches the pod on its internal network, replies pass
        with socket.create_connection((closed_ip, 8080), timeout=5) as c:
            assert c.recv(64) == b"closed"
        # the open pod is reachable from the host too, not from the closed pod
        with socket.create_connection((other_ip, 8080), timeout=5) as c:
            assert c.recv(64) == b"other"
        networks = net.sandboxes[h.pod("closed")["metadata"]["uid"]].networks
        assert len(networks) == 1
        assert SyncDocker().request("GET", f"/networks/{next(iter(networks))}")["Internal"]
    run_docker(tmp_path, body)


def test_a_service_made_after_its_pod_starts_is_served_and_the_pod_keeps_its_ip(
        tmp_path, docker_images):
    async def body(h, net):
        h.store.create(PODS, "default", _serving("late", "default", docker_images["python"],
                                                 {"app": "late"}, "late"))
        await h.until(lambda: "running" in h.container_state("late") and read_log(
            h.state_dir, h.pod("late")) == "listening\n", what="late listening", timeout=60)
        ip = h.pod("late")["status"]["podIP"]
        h.store.create(SERVICES, "default", {
            "metadata": {"name": "late-svc"},
            "spec": {"selector": {"app": "late"}, "ports": [{"port": 8080}]}})
        uid = h.pod("late")["metadata"]["uid"]
        sandbox = net.sandboxes[uid]
        await h.until(lambda: "late-svc" in sandbox.networks.get(sandbox.home, ()),
                      what="the Service's aliases")
        h.store.create(PODS, "default", pod("client", docker_images["python"],
                                            args=["-c", CHECK, "late-svc.default:8080"]))
        await h.until(lambda: (h.pod("client")["status"]).get("phase") == "Succeeded",
                      what="client done", timeout=60)
        assert read_log(h.state_dir, h.pod("client")) == "late-svc.default:8080 reached late\n"
        with socket.create_connection((ip, 8080), timeout=5) as c:  # the same pod IP
            assert c.recv(64) == b"late"
    run_docker(tmp_path, body)


def test_pods_with_open_egress_reach_the_host_at_the_gateway(tmp_path, docker_images):
    async def body(h, net):
        assert net.describe()["gateway"] == net.gateway
        # the node's shape: ingress restricted, egress open (its own non-internal network)
        h.store.create(NETWORKPOLICIES, "default", {
            "metadata": {"name": "deny-ingress"},
            "spec": {"podSelector": {"matchLabels": {"app": "node"}},
                     "policyTypes": ["Ingress"]}})
        with _host_server(net.gateway) as srv:
            target = f"{net.gateway}:{srv.getsockname()[1]}"
            for name, labels in (("open", {}), ("node", {"app": "node"})):
                h.store.create(PODS, "default", pod(name, docker_images["python"],
                                                    args=["-c", CHECK, target], labels=labels))
            for name in ("open", "node"):
                await h.until(lambda: (h.pod(name)["status"]).get("phase") == "Succeeded",
                              what=f"{name} done", timeout=60)
                assert read_log(h.state_dir, h.pod(name)).startswith(f"{target} reached")
    run_docker(tmp_path, body)


def test_a_policy_made_for_a_running_pod_is_enforced_at_once(tmp_path, docker_images):
    async def body(h, net):
        h.store.create(PODS, "default", _serving("victim", "default", docker_images["python"],
                                                 {"app": "victim"}, "victim"))
        await h.until(lambda: "running" in h.container_state("victim"), what="running",
                      timeout=60)
        uid = h.pod("victim")["metadata"]["uid"]
        assert set(net.sandboxes[uid].networks) == {net._name("default")}
        h.store.create(NETWORKPOLICIES, "default", {
            "metadata": {"name": "lock-down"},
            "spec": {"podSelector": {"matchLabels": {"app": "victim"}},
                     "policyTypes": ["Ingress", "Egress"]}})
        sandbox = net.sandboxes[uid]
        await h.until(lambda: net._name("default") not in sandbox.networks
                      and len(sandbox.networks) == 1, what="moved off the open network")
        info = SyncDocker().request("GET", f"/networks/{next(iter(sandbox.networks))}")
        assert info["Internal"]
        assert any(e["reason"] == "PodNetworkChanged" for e in h.events("victim"))
        # the pod's status shows its address on the new network (probes and clients follow it)
        old_ip = next(e for e in h.events("victim")
                      if e["reason"] == "PodNetworkChanged")["message"].split("pod IP ")[1].split()[0]
        new_ip = await h.until(lambda: (ip := h.pod("victim")["status"].get("podIP")) != old_ip
                               and ip, what="the new pod IP in the status")
        container = SyncDocker().request("GET", f"/containers/{sandbox.engine_id}/json")
        assert [n["IPAddress"] for n in container["NetworkSettings"]["Networks"].values()] == [new_ip]
    run_docker(tmp_path, body)
