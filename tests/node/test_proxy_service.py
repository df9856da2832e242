"""Reading the proxy's Service (node/proxy_address.py, node/proxy_service.py): the address algorithm
pods get instead of DNS, and the refusal to run while it is unknown."""
from __future__ import annotations

import threading

import pytest

from node.errors import ClusterError, TransientClusterError
from node.proxy_address import ProxyAddress, ProxyServiceError, parse_service
from node.proxy_service import ProxyResolver


def service(ports, cluster_ip="10.96.0.20"):
    return {"metadata": {"name": "v6-proxy", "namespace": "v6-node"},
            "spec": {"clusterIP": cluster_ip, "ports": ports}}


def test_the_address_is_the_cluster_ip_the_port_and_the_target_port():
    svc = service([{"name": "admin", "port": 9000, "targetPort": 9001},
                   {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}])
    assert parse_service(svc, 80) == ProxyAddress("10.96.0.20", 80, 8080)


def test_a_target_port_defaults_to_the_port_and_may_be_a_numeric_string():
    assert parse_service(service([{"port": 8080}]), 8080).target_port == 8080
    assert parse_service(service([{"port": 80, "targetPort": "8080"}]), 80).target_port == 8080


@pytest.mark.parametrize("svc, port, message", [
    (service([{"port": 80, "targetPort": "http"}]), 80, "named targetPort 'http'"),
    (service([{"port": 80, "targetPort": 0}]), 80, "invalid targetPort"),
    (service([{"port": 81}]), 80, "has no TCP port 80"),
    (service([{"port": 80, "protocol": "UDP"}]), 80, "has no TCP port 80"),
    (service([{"port": 80}], cluster_ip="None"), 80, "has no ClusterIP"),
    (service([{"port": 80}], cluster_ip=""), 80, "has no ClusterIP"),
    ({"metadata": {}}, 80, "has no spec"),
])
def test_an_unusable_service_is_refused_with_the_reason(svc, port, message):
    with pytest.raises(ProxyServiceError, match=message):
        parse_service(svc, port)


class Reads:
    """What read_proxy_service would answer, one call after another."""

    def __init__(self, *answers):
        self.answers = list(answers)

    def __call__(self) -> ProxyAddress:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_runs_are_refused_with_the_reason_until_the_service_can_be_read():
    applied = []
    address = ProxyAddress("10.96.0.20", 80, 8080)
    resolver = ProxyResolver(Reads(ClusterError("get service v6-node/v6-proxy: 404 not found"), address),
                             applied.append, threading.Event())
    assert resolver.refresh() is False
    with pytest.raises(ProxyServiceError, match="not resolved: get service v6-node/v6-proxy: 404"):
        resolver.current()
    assert resolver.refresh() is True
    assert resolver.current() == address and applied == [address]


def test_a_new_address_is_taken_only_once_its_policy_is_applied():
    first, moved = ProxyAddress("10.96.0.20", 80, 8080), ProxyAddress("10.96.0.20", 80, 9090)
    fail = {"on": False}

    def apply(address):
        if fail["on"]:
            raise ClusterError("cannot apply the algorithms' network policy: 403")
    resolver = ProxyResolver(Reads(first, moved), apply, threading.Event())
    assert resolver.refresh() and resolver.current() == first
    fail["on"] = True
    assert resolver.refresh() is True  # the old address (and its policy) stays in use
    assert resolver.current() == first
    fail["on"] = False
    resolver.refresh()
    assert resolver.current() == moved


def test_a_failed_read_keeps_the_last_address():
    address = ProxyAddress("10.96.0.20", 80, 8080)
    resolver = ProxyResolver(Reads(address, TransientClusterError("timeout")), lambda a: None,
                             threading.Event())
    resolver.refresh()
    assert resolver.refresh() is True and resolver.current() == address


def test_the_resolver_thread_retries_and_stops_with_the_node():
    stop = threading.Event()
    got = threading.Event()
    resolver = ProxyResolver(Reads(ClusterError("404"), ProxyAddress("10.96.0.20", 80, 80)),
                             lambda a: got.set(), stop, interval=0.05)
    resolver.start()
    try:
        assert got.wait(5), "the resolver did not retry"
    finally:
        stop.set()
        resolver.join(5)
    assert not resolver._thread.is_alive()


def test_the_agent_refuses_a_run_while_the_proxy_is_unknown_and_runs_once_it_is_known(tmp_path):
    """No Job without the proxy's address: never a pod left to find the proxy through DNS."""
    from tests.reliability.harness import Harness
    h = Harness(tmp_path)
    try:
        reads = Reads(ClusterError("get service v6-node/v6-proxy: 404 services \"v6-proxy\" not found"),
                      ProxyAddress("10.96.0.20", 8080, 8080))
        resolver = ProxyResolver(reads, lambda a: None, threading.Event())
        h.agent.proxy = resolver.current
        resolver.refresh()
        payload = {"run_id": 41, "task_id": 41, "image": "v6-demo/avg", "databases": ["default"],
                   "input": {"method": "avg"}, "token": "t"}
        h.command(payload)
        result = h.results()[41]
        assert result["status"] == "start failed"
        assert "the proxy's Service is not resolved: get service v6-node/v6-proxy: 404" in result["logs"]
        assert h.cluster.created == []
        resolver.refresh()
        h.command({**payload, "run_id": 42, "task_id": 42})
        [name] = h.cluster.created
        spec = h.cluster.jobs[name]["spec"]["template"]["spec"]
        assert spec["hostAliases"][0]["ip"] == "10.96.0.20" and spec["dnsPolicy"] == "None"
    finally:
        h.close()
