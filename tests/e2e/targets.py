"""Where the end-to-end scenarios run: a "target" is a whole deployed system (server, proxy, nodes,
cluster) seen from the researcher's side, plus the few operator actions the scenarios need.

- `LocalTarget`: the local cluster stand-in with the server, proxy and two nodes as processes
  (localcluster.stack.Stack), started by the test session. Runs in `make test` / CI.
- `ClusterTarget`: the system `kubectl apply -k kubeconfs/` deployed on the cluster a kubeconfig
  points at (k3d or real); the server is reached through a `kubectl port-forward`. Runs with
  `make e2e` (V6_E2E_KUBECONFIG); skipped with the reason when that cluster cannot be reached.

Both answer the same questions, so one scenario file serves both.
"""
from __future__ import annotations

import csv
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import requests
import yaml

from localcluster import k3d
from localcluster.stack import DEMO_CSV, REPO, NodeSpec, Stack, StackError, wait_for

KUBECONFIG_ENV = "V6_E2E_KUBECONFIG"
TEST_IMAGES = REPO / "tests" / "integration" / "images.yaml"


class TargetUnavailable(Exception):
    """The target cannot be used here; the message is the skip reason."""


def column_values(path: Path, column: str) -> list[float]:
    with open(path, newline="") as f:
        return [float(row[column]) for row in csv.DictReader(f)]


@dataclass(frozen=True)
class LongTask:
    """A task that stays active for about `seconds` and then completes."""
    image: str
    input: dict
    databases: tuple[str, ...] = ()


class Target(Protocol):
    name: str
    node_ids: tuple[str, ...]                 # nodes that run tasks (first: the default)
    data: dict[str, Path]                     # node id -> local copy of its "default" database
    # True where algorithm pods have their own network and NetworkPolicies are enforced (a real
    # cluster). The local stand-in runs pods on the host network today; per-pod network
    # namespaces are being added, and this flag is where that will show.
    network_isolation: bool

    def api(self, method: str, path: str, **kwargs) -> requests.Response: ...
    def long_task(self, seconds: float) -> LongTask: ...
    def diagnostics_input(self) -> dict: ...
    def restart_node(self, node_id: str) -> None: ...
    def close(self) -> None: ...


class _Researcher:
    """Researcher-side calls over the server's HTTP API (docs/CONTRACTS.md §3)."""
    server_url: str
    researcher_key: str

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.server_url}{path}",
                                headers={"Authorization": f"Bearer {self.researcher_key}"},
                                timeout=10, **kwargs)


# --- local stand-in ------------------------------------------------------------------------

class LocalTarget(_Researcher):
    name = "local"
    network_isolation = False

    def __init__(self, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        # Two nodes with different data, so a federated mean differs from each node's own.
        self.data = {"node-a": DEMO_CSV, "node-b": workdir / "node-b.csv"}
        ages = [23, 31, 47, 52, 60]
        self.data["node-b"].write_text("Name,Age\n" + "".join(f"b{i},{a}\n" for i, a in enumerate(ages)))
        self.node_ids = tuple(self.data)
        self.stack = Stack(workdir / "stack")
        try:
            self.stack.start_cluster(images=[TEST_IMAGES])
            specs = [NodeSpec(n, f"key-{n}-{secrets.token_hex(8)}",
                              [{"label": "default", "uri": str(path), "type": "csv"}],
                              extra={"images": {"allowed": ["v6-demo/*", "test/*"]}})
                     for n, path in self.data.items()]
            self.stack.start_server(specs)
            self.stack.start_proxy()
            for spec in specs:
                self.stack.start_node(spec.node_id)
        except BaseException:
            self.stack.close()
            raise
        self.server_url = self.stack.server_url
        self.researcher_key = self.stack.researcher_key
        self.kubeconfig = self.stack.kubeconfig

    def long_task(self, seconds: float) -> LongTask:
        return LongTask("test/sleeper", {"seconds": seconds})

    def diagnostics_input(self) -> dict:
        # Targets on 127.0.0.1 that the stack owns: the API server and the node's health port.
        cluster_port = int(str(yaml.safe_load(Path(self.kubeconfig).read_text())["clusters"][0]["cluster"]
                               ["server"]).rsplit(":", 1)[1])
        node_cfg = yaml.safe_load((self.stack.workdir / "node-node-a.yaml").read_text())
        return {"probes": {"kubernetes_api": [f"127.0.0.1:{cluster_port}"],
                           "node": [f"127.0.0.1:{node_cfg['health']['port']}"], "timeout": 2}}

    def restart_node(self, node_id: str) -> None:
        self.stack.stop_node(node_id)
        self.stack.start_node(node_id)

    def close(self) -> None:
        self.stack.close()

    def logs(self) -> str:
        return self.stack.logs()


# --- a deployed cluster ----------------------------------------------------------------------

class ClusterTarget(_Researcher):
    """The deployed demo system (kubeconfs/): node-a with the demo database, the proxy and the
    dummy server, reached through a port-forward (localcluster/k3d.py)."""
    name = "cluster"
    network_isolation = True

    def __init__(self, kubeconfig: Path, workdir: Path):
        from kubernetes import client, config
        if not kubeconfig.is_file():
            raise TargetUnavailable(f"{KUBECONFIG_ENV}={kubeconfig}: no such file")
        try:
            missing = k3d.not_ready(kubeconfig)
        except StackError as e:
            raise TargetUnavailable(f"{e} (v6 deployed there? make deploy)") from e
        if missing:
            raise TargetUnavailable(f"v6 is not deployed on the cluster of {kubeconfig} (make deploy): "
                                    f"{', '.join(missing)}")
        self.kubeconfig = kubeconfig
        self.data = {"node-a": DEMO_CSV}   # kubeconfs mounts algorithms/avg/data at the node
        self.node_ids = ("node-a",)
        self.researcher_key = k3d.researcher_key()
        try:
            self.forward = k3d.PortForward(kubeconfig, workdir / "port-forward.log")
        except StackError as e:
            raise TargetUnavailable(str(e)) from e
        self.server_url = self.forward.url
        self.api_client = config.new_client_from_config(config_file=str(kubeconfig))
        self.apps = client.AppsV1Api(self.api_client)

    def long_task(self, seconds: float) -> LongTask:
        # No sleeper image is deployed: diagnostics waits `seconds` (at most 60) on a connection
        # the NetworkPolicy drops (TEST-NET-1, never routed), then completes.
        return LongTask("v6-demo/diagnostics", {"probes": {"outside": ["192.0.2.1:9"],
                                                           "timeout": min(seconds, 60)}})

    def diagnostics_input(self) -> dict:
        return {"probes": {"kubernetes_api": ["kubernetes.default.svc:443"],
                           "outside": ["192.0.2.1:443"], "timeout": 3}}

    def restart_node(self, node_id: str) -> None:
        """`kubectl rollout restart`, then wait until the new pod is the only one and ready."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        patch = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}}
        generation = self.apps.patch_namespaced_deployment("v6-node", "v6-node", patch).metadata.generation

        def rolled_out():
            s = self.apps.read_namespaced_deployment("v6-node", "v6-node").status
            return (s.observed_generation or 0) >= generation and (s.updated_replicas or 0) == 1 \
                and (s.ready_replicas or 0) == 1 and (s.replicas or 0) == 1
        wait_for(rolled_out, 180, "the node to be restarted", interval=1)

    def close(self) -> None:
        self.forward.close()
        self.api_client.close()

    def logs(self) -> str:
        return f"(kubectl --kubeconfig {self.kubeconfig} -n v6-node logs deploy/v6-node)"


def cluster_kubeconfig() -> Path | None:
    value = os.environ.get(KUBECONFIG_ENV, "").strip()
    return Path(value).expanduser() if value else None
