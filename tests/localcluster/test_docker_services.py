"""ClusterIPs in docker mode (localcluster/network/docker_services.py): the DNAT rules each pod sandbox gets."""
from __future__ import annotations

from localcluster.network.docker_services import Endpoint, NatRule, nat_rules


def svc(name, ns, selector, ports, cluster_ip="10.96.0.10"):
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": cluster_ip, "selector": selector, "ports": ports}}


ALGO = Endpoint("a-uid", "v6-jobs", {"app": "algo"}, {}, {"h-a": "172.30.0.2", "p-ab": "172.31.0.2"})
PROXY = Endpoint("b-uid", "v6-node", {"app": "v6-proxy"}, {"http": 8080},
                 {"h-b": "172.32.0.2", "p-ab": "172.31.0.3"})
STRANGER = Endpoint("c-uid", "v6-jobs", {"app": "other"}, {}, {"h-c": "172.33.0.2"})


def test_a_cluster_ip_leads_to_the_selected_pod_on_a_shared_network_at_its_target_port():
    rules = nat_rules([ALGO, PROXY, STRANGER],
                      [svc("v6-proxy", "v6-node", {"app": "v6-proxy"}, [{"port": 80, "targetPort": "http"}])])
    assert rules["a-uid"] == (NatRule("10.96.0.10", 80, "TCP", "172.31.0.3", 8080),)
    # no shared network, no rule: the policies decide who may reach whom, not the rules
    assert rules["c-uid"] == () and rules["b-uid"] == ()


def test_services_without_selector_or_cluster_ip_get_no_rules():
    rules = nat_rules([ALGO, PROXY], [
        svc("external", "v6-node", {}, [{"port": 80}]),
        svc("headless", "v6-node", {"app": "v6-proxy"}, [{"port": 80}], cluster_ip="None"),
        svc("elsewhere", "other", {"app": "v6-proxy"}, [{"port": 80}]),
        svc("unknown-port", "v6-node", {"app": "v6-proxy"}, [{"port": 80, "targetPort": "nope"}]),
    ])
    assert rules == {"a-uid": (), "b-uid": ()}


def test_rule_arguments():
    assert NatRule("10.96.0.10", 80, "TCP", "172.31.0.3", 8080).args() == [
        "-d", "10.96.0.10/32", "-p", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", "172.31.0.3:8080"]
    # the translated packet leaves by the shared network, with the pod's address there
    assert NatRule("10.96.0.10", 80, "TCP", "172.31.0.3", 8080).post_args() == [
        "-d", "172.31.0.3/32", "-p", "tcp", "--dport", "8080", "-m", "conntrack", "--ctstate", "DNAT",
        "-j", "MASQUERADE"]
