"""Where the end-to-end scenarios run: a "target" is a whole deployed system (server, proxy, nodes,
cluster) seen from the researcher's side, plus the few operator actions the scenarios need.

- `LocalTarget`: the local cluster stand-in with the server, proxy and two nodes as processes
  (localcluster.stack.Stack), started by the test session. Runs in `make test` / CI.
- `DockerTarget`: `kubectl apply -k kubeconfs/` on the local cluster in docker mode (`serve
  --runtime docker --host-root DIR`): server, proxy and node run as containers from the images
  the project builds, algorithms too, isolated by Docker networks made from the NetworkPolicies.
  The server is reached at its pod IP (Docker bridges are routed from the host). Runs in `make
  test` / CI and alone with `make e2e-docker`; skipped with the reason where Docker, kubectl or
  the images are missing (in CI, as root, that is a failure).
- `ClusterTarget`: the system `kubectl apply -k kubeconfs/` deployed on the cluster a kubeconfig
  points at (k3d or real); the server is reached through a `kubectl port-forward`. Runs with
  `make e2e` (V6_E2E_KUBECONFIG); skipped with the reason when that cluster cannot be reached.

Both answer the same questions, so one scenario file serves both.
"""
from __future__ import annotations

import csv
import os
import secrets
import shutil
import subprocess
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
# The images kubeconfs/ and the scenarios run (built by mk/images.mk).
DEMO_IMAGES = tuple(f"v6-demo/{name}:latest" for name in ("server", "proxy", "node", "avg",
                                                          "diagnostics"))
# hostPath directories of kubeconfs/base on the cluster node (as `make cluster` maps them for k3d)
NODE_TASKS = Path("var/lib/v6-node/tasks")
NODE_DATA = Path("var/lib/v6-node/data")


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


# --- the deployed system (kubeconfs/) --------------------------------------------------------

def diagnostics_long_task(seconds: float) -> LongTask:
    """No sleeper image is deployed: diagnostics waits `seconds` (at most 60) on a connection
    the NetworkPolicy drops (TEST-NET-1, never routed), then completes."""
    return LongTask("v6-demo/diagnostics", {"probes": {"outside": ["192.0.2.1:9"],
                                                       "timeout": min(seconds, 60)}})


def rollout_restart(apps, namespace: str, name: str, timeout: float = 180) -> None:
    """`kubectl rollout restart`, then wait until the new pod is the only one and ready."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    patch = {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": stamp}}}}}
    generation = apps.patch_namespaced_deployment(name, namespace, patch).metadata.generation

    def rolled_out():
        s = apps.read_namespaced_deployment(name, namespace).status
        return (s.observed_generation or 0) >= generation and (s.updated_replicas or 0) == 1 \
            and (s.ready_replicas or 0) == 1 and (s.replicas or 0) == 1
    wait_for(rolled_out, timeout, f"{namespace}/{name} to be restarted", interval=1)


# --- the local cluster in docker mode ----------------------------------------------------------

def docker_unavailable() -> str | None:
    """Why the docker target cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root (the docker runtime and its networks need root)"
    from localcluster.runtime import docker_client
    why = docker_client.docker_unavailable()
    if why:
        return why
    if shutil.which("kubectl") is None:
        return "kubectl is not installed"
    engine = docker_client.SyncDocker()
    missing = []
    for ref in DEMO_IMAGES:
        try:
            engine.request("GET", f"/images/{docker_client.q(ref)}/json")
        except docker_client.DockerError:
            missing.append(ref)
    if missing:
        return f"images not built: {', '.join(missing)} (make images-build)"
    return None


class DockerTarget(_Researcher):
    """kubeconfs/ applied with kubectl to the local cluster in docker mode. hostPath volumes live
    under a node root of the test's own (DIR/var/lib/v6-node/{tasks,data}), as in a k3d node."""
    name = "docker"
    network_isolation = True

    def __init__(self, workdir: Path):
        from kubernetes import client

        from localcluster.testing import LocalCluster, LocalClusterError
        why = docker_unavailable()
        if why:
            raise TargetUnavailable(why)
        self.workdir = workdir
        self.node_root = workdir / "node-root"
        tasks, data = self.node_root / NODE_TASKS, self.node_root / NODE_DATA
        tasks.mkdir(parents=True)
        tasks.chmod(0o777)  # the node runs as uid 1000 (as `make cluster` does for k3d)
        data.mkdir(parents=True)
        shutil.copyfile(DEMO_CSV, data / "employees.csv")
        self.data = {"node-a": data / "employees.csv"}
        self.node_ids = ("node-a",)
        self.researcher_key = k3d.researcher_key()
        self.cluster = LocalCluster(state_dir=workdir / "cluster", start_timeout=120,
                                    stop_timeout=60,
                                    extra_args=["--runtime", "docker",
                                                "--host-root", str(self.node_root)])
        try:
            self.cluster.start()
        except LocalClusterError as e:
            raise StackError(f"the local cluster in docker mode did not start: {e}") from e
        try:
            self.kubeconfig = self.cluster.kubeconfig
            self.api_client = self.cluster.api_client()
            self.core = client.CoreV1Api(self.api_client)
            self.apps = client.AppsV1Api(self.api_client)
            # validated by the API server (kubectl finds fieldValidation in its OpenAPI v3)
            self._kubectl("apply", "-k", str(REPO / "kubeconfs"))
            wait_for(self._rolled_out, 240, "the server, proxy and node deployments to be ready",
                     interval=1)
            self.server_url = f"http://{self._pod_ip('v6-server', 'app=v6-server')}:5000"
            wait_for(self._server_answers, 60, "the server to answer", interval=0.5)
        except BaseException:
            self.close()
            raise

    def _rolled_out(self) -> bool:
        return not k3d.not_ready(self.kubeconfig)

    def _kubectl(self, *args: str) -> str:
        done = subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise StackError(f"kubectl {' '.join(args)} failed ({done.returncode}): "
                             f"{(done.stderr or done.stdout)[-2000:]}")
        return done.stdout

    def _pod(self, namespace: str, selector: str):
        """The one running, not deleted pod of a selector (None while there is not exactly one)."""
        pods = [p for p in self.core.list_namespaced_pod(namespace, label_selector=selector).items
                if p.status.phase == "Running" and not p.metadata.deletion_timestamp
                and p.status.pod_ip]
        return pods[0] if len(pods) == 1 else None

    def _pod_ip(self, namespace: str, selector: str) -> str:
        pod = wait_for(lambda: self._pod(namespace, selector), 60,
                       f"one running pod {selector} in {namespace}", interval=0.5)
        return pod.status.pod_ip

    def _server_answers(self) -> bool:
        try:
            requests.get(f"{self.server_url}/api/version", timeout=2)
            return True  # any HTTP answer means the server is there
        except requests.RequestException:
            return False

    def long_task(self, seconds: float) -> LongTask:
        return diagnostics_long_task(seconds)

    def diagnostics_input(self) -> dict:
        """Everything but the proxy must be out of an algorithm's reach: the API server where
        pods reach it (KUBERNETES_SERVICE_HOST:PORT), the node's and the server's pods."""
        network = self.cluster.network()
        port = int(self.cluster.server.rsplit(":", 1)[1])
        api = [f"{network['gateway']}:{port}"] if network.get("gateway") else []
        return {"probes": {"kubernetes_api": api,
                           "node": [f"{self._pod_ip('v6-node', 'app=v6-node')}:8081"],
                           "pods": [f"{self._pod_ip('v6-server', 'app=v6-server')}:5000"],
                           "outside": ["192.0.2.1:443"], "timeout": 3,
                           # the pod's own resolvers (resolv.conf, cluster DNS env): none may
                           # answer (issue 13); traffic stays in the Docker networks
                           "dns_system": True}}

    def restart_node(self, node_id: str) -> None:
        rollout_restart(self.apps, "v6-node", "v6-node")

    def close(self) -> None:
        self.cluster.stop()

    def logs(self) -> str:
        out = []
        for ns, selector in (("v6-node", "app=v6-node"), ("v6-node", "app=v6-proxy")):
            try:
                for pod in self.core.list_namespaced_pod(ns, label_selector=selector).items:
                    log = self.core.read_namespaced_pod_log(pod.metadata.name, ns, tail_lines=60,
                                                            _preload_content=False).data
                    out.append(f"--- {ns}/{pod.metadata.name}\n{log.decode(errors='replace')}")
            except Exception as e:  # noqa: BLE001 - diagnostics for a failing test only
                out.append(f"--- {ns} {selector}: {type(e).__name__}: {e}")
        return "\n".join(out) + "\n--- local cluster\n" + self.cluster.stderr()[-3000:]


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
        return diagnostics_long_task(seconds)

    def diagnostics_input(self) -> dict:
        return {"probes": {"kubernetes_api": ["kubernetes.default.svc:443"],
                           "outside": ["192.0.2.1:443"], "timeout": 3}}

    def restart_node(self, node_id: str) -> None:
        rollout_restart(self.apps, "v6-node", "v6-node")

    def close(self) -> None:
        self.forward.close()
        self.api_client.close()

    def logs(self) -> str:
        return f"(kubectl --kubeconfig {self.kubeconfig} -n v6-node logs deploy/v6-node)"


def cluster_kubeconfig() -> Path | None:
    value = os.environ.get(KUBECONFIG_ENV, "").strip()
    return Path(value).expanduser() if value else None
