"""Isolation of algorithm pods, proven from the policies by np-guard's network-config-analyzer:
they reach only the proxy pods' port (the proxy Service's targetPort) and no DNS, nothing reaches
them but their own node's pod (live channel), and the node is not reachable from them. Broken
policies must make the same check fail."""
from __future__ import annotations

import copy
import dataclasses

import pytest

from node.manifests import build_network_policy, live_peer_labels
from node.proxy_address import ProxyAddress
from tests.static.connectivity import (DNS, DNS_POD, OTHER_TENANT, Conn, Roles, analyze, isolation_problems, tcp,
                                       topology)
from tests.static.support import (CLUSTER_IP, VARIANTS, deployed_node_config, deployed_proxy_address, find,
                                  generated, generated_job, generated_live, manifests, with_live_channel)

ALGORITHM = Roles(algorithm="v6-jobs/v6-run-7-node-a[Job]")


def _without(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] != kind]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_deployed_policies_isolate_algorithm_pods(variant, tmp_path):
    conn = analyze(topology(manifests(variant), generated(variant)), tmp_path)
    assert isolation_problems(conn, ALGORITHM) == []
    # The same facts, spelled out.
    assert conn.from_(ALGORITHM.algorithm) == {ALGORITHM.proxy: tcp(8080)}
    assert conn.to(ALGORITHM.algorithm) == {}
    assert (ALGORITHM.algorithm, ALGORITHM.node) not in conn.edges
    # nothing in v6-jobs sends to port 53, to any destination (no DNS exfiltration)
    assert [(s, d) for (s, d), c in conn.edges.items()
            if s.startswith("v6-jobs/") and (c.all or any(p == 53 for _, p in c.pairs))] == []
    # The node keeps its way to the server (the demo's server namespace admits it).
    assert conn.edges[(ALGORITHM.node, "v6-server/v6-server[Deployment]")] == tcp(5000)


def _live_roles() -> Roles:
    live = with_live_channel(deployed_node_config("k3d")).live
    return dataclasses.replace(ALGORITHM, algorithm="v6-jobs/v6-run-8-node-a[Job]", live_ports=(live.pub_port, live.rep_port))


def test_with_the_live_channel_only_the_node_reaches_algorithm_pods(tmp_path):
    assert deployed_node_config("k3d").live.enabled  # as deployed: the live channel is on
    roles = _live_roles()
    conn = analyze(topology(manifests("k3d"), generated_live("k3d")), tmp_path)
    assert conn.to(roles.algorithm) == {roles.node: tcp(*roles.live_ports)}
    assert isolation_problems(conn, roles) == []
    # the same analysis, judged as if the live channel were off, is a breach: the check can tell
    off = dataclasses.replace(roles, live_ports=())
    assert isolation_problems(conn, off) == [f"{roles.node} may reach algorithm pods: {tcp(*roles.live_ports)}"]


def test_the_node_policy_alone_isolates_its_pods(tmp_path):
    """On a cluster where only the node's own policy exists (no kubeconfs/ policies applied), the
    policy from build_network_policy still confines the egress and denies all ingress."""
    objs = _without(manifests("k3d"), "NetworkPolicy")
    conn = analyze(topology(objs, generated("k3d")), tmp_path)
    assert conn.from_(ALGORITHM.algorithm) == {ALGORITHM.proxy: tcp(8080)}
    assert conn.to(ALGORITHM.algorithm) == {}


def test_without_any_policy_the_check_fails(tmp_path):
    objs = _without(manifests("k3d"), "NetworkPolicy")
    job_only = [o for o in generated("k3d") if o["kind"] == "Job"]
    problems = isolation_problems(analyze(topology(objs, job_only), tmp_path), ALGORITHM)
    assert any("outside the cluster" in p for p in problems), problems
    assert any("may reach algorithm pods" in p for p in problems), problems


def _policy(name: str, spec: dict, namespace: str = "v6-jobs") -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


ALGORITHM_PODS = {"matchLabels": {"app.kubernetes.io/managed-by": "v6-node"}}
TO_NODE = [_policy("to-node", {
    "podSelector": ALGORITHM_PODS, "policyTypes": ["Egress"],
    "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "v6-node"}}}]}]})]

BROKEN = {
    # The prototype's shape: DNS to kube-dns only. CoreDNS forwards any name upstream, so rows
    # can leave as <hex>.attacker.example queries: a leak, however narrow the rule (issue 13).
    "dns-to-kube-system": ([_policy("dns-kube-system", {
        "podSelector": ALGORITHM_PODS, "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]})],
        f"algorithm pods may reach {DNS_POD}: {DNS}"),
    # An older mistake: DNS allowed to any pod in any namespace, not to kube-dns.
    "dns-to-any-pod": ([_policy("dns-anywhere", {
        "podSelector": ALGORITHM_PODS, "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {}}],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]})],
        f"algorithm pods may reach {OTHER_TENANT}"),
    "ingress-from-everywhere": ([_policy("open-ingress", {
        "podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]})],
        "may reach algorithm pods"),
    "egress-to-the-internet": ([_policy("internet", {
        "podSelector": ALGORITHM_PODS, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]})],
        "algorithm pods may reach outside the cluster"),
    # Both sides must be opened: v6-node's default deny stops the egress rule alone
    # (test_egress_to_the_node_alone_is_stopped_by_its_ingress_policy).
    "node-opened-to-algorithms": (TO_NODE + [_policy("node-from-jobs", {
        "podSelector": {"matchLabels": {"app": "v6-node"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "v6-jobs"}}}]}]},
        namespace="v6-node")], "the node is reachable from algorithm pods"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_policy_fails_the_check(case, tmp_path):
    policies, expected = BROKEN[case]
    problems = isolation_problems(analyze(topology(manifests("k3d") + policies, generated("k3d")), tmp_path),
                                  ALGORITHM)
    assert any(expected in p for p in problems), problems


def test_egress_to_the_node_alone_is_stopped_by_its_ingress_policy(tmp_path):
    """Defence in depth: a policy opening the algorithms' egress to all of v6-node changes nothing,
    because v6-node admits only algorithm pods, and only on the proxy port."""
    conn = analyze(topology(manifests("k3d") + TO_NODE, generated("k3d")), tmp_path)
    assert isolation_problems(conn, ALGORITHM) == []


def test_a_generated_policy_with_a_wrong_proxy_port_fails_the_check(tmp_path):
    """The node's policy with the wrong port, and no static policy to mask it."""
    objs = _without(manifests("k3d"), "NetworkPolicy")
    job, policy = generated("k3d")
    policy = copy.deepcopy(policy)
    policy["spec"]["egress"][0]["ports"] = [{"protocol": "TCP", "port": 8081}]
    problems = isolation_problems(analyze(topology(objs, [job, policy]), tmp_path), ALGORITHM)
    assert f"algorithm pods may reach {ALGORITHM.proxy} with TCP/8081, expected only TCP/8080" in problems


def test_analyses_do_not_leak_into_each_other(tmp_path):
    """nca runs in-process: a broken configuration analysed in between must not change the result
    for the same good configuration."""
    good = topology(manifests("k3d"), generated("k3d"))
    first = analyze(copy.deepcopy(good), tmp_path / "1")
    policies, _ = BROKEN["ingress-from-everywhere"]
    analyze(topology(manifests("k3d") + policies, generated("k3d")), tmp_path / "2")
    assert analyze(copy.deepcopy(good), tmp_path / "3") == first


def test_connection_sets_parse():
    assert Conn.parse("All connections").all
    assert Conn.parse("{protocols:TCP, UDP,dst_ports:53}") == DNS
    assert Conn.parse("{protocols:TCP,dst_ports:8080}") == tcp(8080)
    assert Conn.parse("{protocols:TCP,dst_ports:5555-5556}") == tcp(5555, 5556)
    assert Conn.parse("{protocols:TCP,dst_ports:53,80-81}") == tcp(53, 80, 81)
    assert len(Conn.parse("{protocols:TCP}").pairs) == 65535
    assert str(tcp(5555, 5556)) == "TCP/5555,5556" and str(tcp(*range(10, 20))) == "TCP/10-19"
    with pytest.raises(Exception, match="cannot parse"):
        Conn.parse("{protocols:TCP,dst_ports:8080,methods:GET}")


def test_node_config_matches_the_proxy_deployment():
    """The generated policy finds the proxy by the labels and port of the deployed proxy."""
    from tests.static.support import find
    config = deployed_node_config("k3d")
    proxy = find(manifests("k3d"), "Deployment", "v6-proxy", "v6-node")
    labels = proxy["spec"]["template"]["metadata"]["labels"]
    assert config.proxy.pod_labels.items() <= labels.items()
    assert proxy["metadata"]["namespace"] == config.proxy.namespace
    ports = [p["containerPort"] for p in proxy["spec"]["template"]["spec"]["containers"][0]["ports"]]
    assert ports == [config.proxy.port]
    svc = find(manifests("k3d"), "Service", config.proxy.service, config.proxy.namespace)
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ports  # numeric: the node reads it


def test_the_prototypes_dns_rule_is_a_port_53_leak(tmp_path):
    """The same shape as the node would once have generated it: caught by the port-53 rule too."""
    policies, _ = BROKEN["dns-to-kube-system"]
    problems = isolation_problems(analyze(topology(manifests("k3d") + policies, generated("k3d")), tmp_path),
                                  ALGORITHM)
    assert f"{ALGORITHM.algorithm} may send to port 53 of {DNS_POD}" in problems


def test_the_policy_allows_the_target_port_not_the_service_port(tmp_path):
    """A Service port 80 -> targetPort 8080: pods connect to port 80 of the ClusterIP, the packet
    reaches the proxy pod on 8080 (after DNAT), and that is the port the policy must allow."""
    objs = _without(manifests("k3d"), "NetworkPolicy")
    config = dataclasses.replace(deployed_node_config("k3d"),
                                 proxy=dataclasses.replace(deployed_node_config("k3d").proxy, port=80))
    svc = find(objs, "Service", "v6-proxy", "v6-node")
    svc["spec"]["ports"] = [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
    svc["spec"]["clusterIP"] = CLUSTER_IP
    from node.proxy_address import parse_service
    address = parse_service(svc, 80)
    assert address == ProxyAddress(CLUSTER_IP, 80, 8080)
    config = with_live_channel(config, enabled=False)
    job = generated_job(config, proxy=address)
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PORT"] == "80"
    conn = analyze(topology(objs, [job, build_network_policy(config, address)]), tmp_path)
    assert conn.from_(ALGORITHM.algorithm) == {ALGORITHM.proxy: tcp(8080)}
    assert conn.to(ALGORITHM.algorithm) == {}
    # the Service port in the policy instead (the old mistake) would cut the pods off the proxy
    wrong = build_network_policy(config, ProxyAddress(CLUSTER_IP, 80, 80))
    conn = analyze(topology(objs, [job, wrong]), tmp_path / "wrong")
    assert (f"algorithm pods may reach {ALGORITHM.proxy} with TCP/80, expected only TCP/8080"
            in isolation_problems(conn, ALGORITHM))


def _second_node(objs: list[dict], node_id: str) -> dict:
    """Another node's Deployment in v6-node, as a second kubeconfs deployment would make it."""
    node = copy.deepcopy(find(objs, "Deployment", "v6-node", "v6-node"))
    node["metadata"]["name"] = f"v6-{node_id}"
    for labels in (node["spec"]["selector"]["matchLabels"], node["spec"]["template"]["metadata"]["labels"]):
        labels["app"] = "v6-node"
    node["spec"]["selector"]["matchLabels"]["v6.node-id"] = node_id
    node["spec"]["template"]["metadata"]["labels"]["v6.node-id"] = node_id
    return node


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_with_two_nodes_only_a_runs_own_node_reaches_its_sidecars(variant, tmp_path):
    """node-a and node-b share v6-node and v6-jobs: each node's pod reaches its own algorithm
    pods' sidecar ports, never the other node's (both labelled app=v6-node)."""
    objs = manifests(variant)
    node_a = find(objs, "Deployment", "v6-node", "v6-node")
    config_a = with_live_channel(deployed_node_config(variant))
    # the deployed node pod carries what its policy's live ingress asks for
    assert live_peer_labels(config_a).items() <= node_a["spec"]["template"]["metadata"]["labels"].items()
    objs.append(_second_node(objs, "node-b"))
    config_b = dataclasses.replace(config_a, node_id="node-b")
    proxy = deployed_proxy_address(variant, config_a)
    generated_objs = [generated_job(config_a, run_id=8, proxy=proxy), build_network_policy(config_a, proxy),
                      generated_job(config_b, run_id=9, proxy=proxy), build_network_policy(config_b, proxy)]
    conn = analyze(topology(objs, generated_objs), tmp_path)
    live = tcp(config_a.live.pub_port, config_a.live.rep_port)
    node_a_pod, node_b_pod = "v6-node/v6-node[Deployment]", "v6-node/v6-node-b[Deployment]"
    algo_a, algo_b = "v6-jobs/v6-run-8-node-a[Job]", "v6-jobs/v6-run-9-node-b[Job]"
    assert conn.to(algo_a) == {node_a_pod: live}
    assert conn.to(algo_b) == {node_b_pod: live}
    assert (node_b_pod, algo_a) not in conn.edges and (node_a_pod, algo_b) not in conn.edges
    for algo in (algo_a, algo_b):  # one proxy here, which both nodes' algorithm pods reach
        assert conn.from_(algo) == {ALGORITHM.proxy: tcp(8080)}


def test_the_old_live_rule_lets_another_nodes_pod_in(tmp_path):
    """The prototype's live ingress (any app=v6-node pod): the two-node check catches it."""
    objs = manifests("k3d")
    objs.append(_second_node(objs, "node-b"))
    config = with_live_channel(deployed_node_config("k3d"))
    proxy = deployed_proxy_address("k3d", config)
    policy = build_network_policy(config, proxy)
    del policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["v6.node-id"]
    conn = analyze(topology(objs, [generated_job(config, run_id=8, proxy=proxy), policy]), tmp_path)
    assert "v6-node/v6-node-b[Deployment]" in conn.to("v6-jobs/v6-run-8-node-a[Job]")
