"""The algorithms through the whole local system (cluster, server, proxy, nodes as processes):
`avg` and its errors, the federated mean over two nodes, and the diagnostics' isolation checks
with pod network isolation on (a network namespace per pod, the proxy its only way out) and off
(the host's network, where every isolation check must fail).

Every probe target is an address the test owns: the local cluster's API and the node's health
port on 127.0.0.1, a listening pod, the test's own listeners on 127.0.0.1 and on the cluster's
gateway address (made by the cluster this test started), `localhost` and the reserved name
`example.invalid` (with isolation on only: the pod has no route to any name server)."""
from __future__ import annotations

import contextlib
import csv
import ipaddress
import json
import socket
from pathlib import Path

import pytest
import yaml

from localcluster.stack import DEMO_CSV, JOBS_NAMESPACE, Stack, wait_for
from localcluster.testing import require_isolation
from tests.integration.support import make_stack, node_spec, pytestmark  # noqa: F401

PROBE_TIMEOUT = 2
CATEGORIES = ("kubernetes_api", "node", "pods", "outside", "dns_names")


def column(path: Path, name: str = "Age") -> list[float]:
    with open(path, newline="") as f:
        return [float(row[name]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def node_b_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "node-b.csv"
    path.write_text("Name,Age\n" + "".join(f"b{i},{a}\n" for i, a in enumerate([19, 64, 33])))
    return path


@pytest.fixture(scope="module")
def isolated(tmp_path_factory, node_b_csv):
    """Two nodes on a cluster that isolates every pod (skipped where that is not possible)."""
    require_isolation()
    stack = make_stack(tmp_path_factory.mktemp("isolated"), [
        node_spec("node-a"),
        node_spec("node-b", [{"label": "default", "uri": str(node_b_csv), "type": "csv"}]),
    ], pod_network="isolated")
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def host_network(tmp_path_factory):
    """One node on a cluster whose pods share the host's network (isolation deliberately off)."""
    stack = make_stack(tmp_path_factory.mktemp("host"), [node_spec("node-a")],
                       pod_network="host")
    yield stack
    stack.close()


# -- avg --------------------------------------------------------------------------------------------

def test_avg_gives_the_mean_of_the_column(isolated):
    task = isolated.create_task(image="v6-demo/avg", input={"method": "avg", "column": "Age"},
                                databases=["default"], nodes=["node-a"])
    run = isolated.wait_task(task["id"])["runs"][0]
    assert run["status"] == "completed", run["result"]["logs"]
    ages = column(DEMO_CSV)
    assert json.loads(run["result"]["data"]) == {"mean": pytest.approx(sum(ages) / len(ages)),
                                                 "count": len(ages)}


def test_avg_on_a_missing_column_fails_naming_the_columns_there_are(isolated):
    task = isolated.create_task(image="v6-demo/avg", input={"method": "avg", "column": "Height"},
                                databases=["default"], nodes=["node-a"])
    run = isolated.wait_task(task["id"])["runs"][0]
    assert run["status"] == "crashed", run
    logs = run["result"]["logs"]
    assert "Height" in logs and "Age" in logs, logs


def test_federated_mean_over_two_nodes_is_the_mean_of_their_union(isolated, node_b_csv):
    """The central part runs on each node of the task, creates the partial subtask through the
    proxy (it runs on both nodes, the parent's) and combines their sums and counts."""
    task = isolated.create_task(image="v6-demo/avg", databases=["default"],
                                nodes=["node-a", "node-b"],
                                input={"method": "central", "column": "Age", "timeout": 120})
    runs = isolated.wait_task(task["id"], timeout=120)["runs"]
    union = column(DEMO_CSV) + column(node_b_csv)
    assert sorted(r["node_id"] for r in runs) == ["node-a", "node-b"]
    for run in runs:
        assert run["status"] == "completed", run["result"]["logs"]
        result = json.loads(run["result"]["data"])
        assert result["mean"] == pytest.approx(sum(union) / len(union))
        assert result["count"] == len(union)
    # the nodes' data differ: neither node's own mean is the federated one
    for own in (column(DEMO_CSV), column(node_b_csv)):
        assert sum(own) / len(own) != pytest.approx(sum(union) / len(union))


# -- diagnostics ------------------------------------------------------------------------------------

class Listener:
    """A listening socket the test owns; connections are counted, never served (no thread)."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def connections(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def listening_pod(stack: Stack):
    """A pod of the cluster listening on its pod IP; yields (ip, port, read its log)."""
    from kubernetes import client, config
    api = config.new_client_from_config(config_file=str(stack.kubeconfig))
    core = client.CoreV1Api(api)
    name = "listener"
    core.create_namespaced_pod(JOBS_NAMESPACE, {
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "listen", "image": "test/listener",
            "env": [{"name": "POD_IP",
                     "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]}})
    try:
        def address():
            try:
                text = core.read_namespaced_pod_log(name, JOBS_NAMESPACE)
            except client.ApiException:
                return None
            for line in text.splitlines():
                if line.startswith("listening on "):
                    host, port = line.split()[-1].rsplit(":", 1)
                    return host, int(port)
            return None
        ip, port = wait_for(address, 30, "the listening pod")
        yield ip, port, lambda: core.read_namespaced_pod_log(name, JOBS_NAMESPACE)
    finally:
        core.delete_namespaced_pod(name, JOBS_NAMESPACE, grace_period_seconds=0)
        api.close()


def health_port(stack: Stack, node_id: str) -> int:
    cfg = yaml.safe_load((stack.workdir / f"node-{node_id}.yaml").read_text())
    return int(cfg["health"]["port"])


def api_port(stack: Stack) -> int:
    return int(stack.cluster.server.rsplit(":", 1)[1])


def run_diagnostics(stack: Stack, probes: dict) -> dict[str, dict]:
    task = stack.create_task(image="v6-demo/diagnostics", databases=["default"], nodes=["node-a"],
                             input={"probes": {**probes, "timeout": PROBE_TIMEOUT}})
    run = stack.wait_task(task["id"], timeout=90)["runs"][0]
    assert run["status"] == "completed", run["result"]["logs"]
    return {c["name"]: c for c in json.loads(run["result"]["data"])}


def isolation_checks(checks: dict[str, dict]) -> dict[str, dict]:
    found = {n: c for n, c in checks.items() if n.startswith("isolation.")}
    for category in CATEGORIES:  # a probe per category, none left undecided for lack of targets
        assert any(n.startswith(f"isolation.{category}:") for n in found), (category, found)
    return found


def test_diagnostics_with_isolation_on_reach_only_the_proxy(isolated):
    assert isolated.network["mode"] == "isolated"
    gateway = isolated.network["gateway"]
    on_gateway, on_loopback = Listener(gateway), Listener("127.0.0.1")
    try:
        with listening_pod(isolated) as (pod_ip, pod_port, pod_log):
            assert ipaddress.IPv4Address(pod_ip) in ipaddress.IPv4Network(
                isolated.network["subnet"])
            api, health = api_port(isolated), health_port(isolated, "node-a")
            checks = run_diagnostics(isolated, {
                "kubernetes_api": [f"127.0.0.1:{api}", f"{gateway}:{api}"],
                "node": [f"127.0.0.1:{health}", f"{gateway}:{health}"],
                "pods": [f"{pod_ip}:{pod_port}"],
                # the gateway listener is reachable from a pod but for the firewall
                "outside": [f"{gateway}:{on_gateway.port}", f"127.0.0.1:{on_loopback.port}"],
                "dns_names": ["example.invalid", f"localhost:{on_loopback.port}"],
            })
            assert checks["proxy_api_version"]["ok"] is True, checks["proxy_api_version"]
            # by the proxy's name, which the pod's hostAliases map to the proxy's address: no DNS
            assert (f"v6-proxy-node-a.v6-node.svc.cluster.local:{isolated.proxy_port}/api/version"
                    in checks["proxy_api_version"]["detail"])
            for name, check in isolation_checks(checks).items():
                assert check["ok"] is True, (name, check)
            assert "not resolvable" in checks["isolation.dns_names:example.invalid:443"]["detail"]
            # nothing got through to the targets ...
            assert "connection from" not in pod_log()
            assert on_gateway.connections() == 0 and on_loopback.connections() == 0
            # ... although they were there: the host reaches them
            socket.create_connection((pod_ip, pod_port), timeout=5).close()
            wait_for(lambda: "connection from" in pod_log(), 10, "the pod to see the host")
            socket.create_connection((gateway, on_gateway.port), timeout=5).close()
            assert on_gateway.connections() == 1
    finally:
        on_gateway.close()
        on_loopback.close()


def test_diagnostics_with_isolation_off_report_every_target_reachable(host_network):
    assert host_network.network["mode"] == "host"
    on_loopback = Listener("127.0.0.1")
    try:
        with listening_pod(host_network) as (pod_ip, pod_port, pod_log):
            checks = run_diagnostics(host_network, {
                "kubernetes_api": [f"127.0.0.1:{api_port(host_network)}"],
                "node": [f"127.0.0.1:{health_port(host_network, 'node-a')}"],
                "pods": [f"{pod_ip}:{pod_port}"],
                "outside": [f"127.0.0.1:{on_loopback.port}"],
                "dns_names": [f"localhost:{on_loopback.port}"],
            })
            assert checks["proxy_api_version"]["ok"] is True, checks["proxy_api_version"]
            for name, check in isolation_checks(checks).items():
                assert check["ok"] is False, (name, check)
                assert "reachable" in check["detail"], (name, check)
            assert "connection from" in pod_log()
            assert on_loopback.connections() >= 2  # as an outside address and via localhost
    finally:
        on_loopback.close()
