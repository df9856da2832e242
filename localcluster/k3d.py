"""`make demo K8S=k3d`: one avg task end to end on the system deployed by `kubectl apply -k
kubeconfs/` (make cluster / images / deploy run first), seen from the researcher's side.

The server is reached through `kubectl port-forward` to its Service, so nothing on the cluster is
exposed beyond this machine's loopback. Also used by the e2e suite's cluster target.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import requests
import yaml

from localcluster.stack import DEMO_CSV, REPO, StackError, wait_for


# Where `make cluster` writes the cluster's kubeconfig (mk/k8s.mk K3D_KUBECONFIG).
K3D_KUBECONFIG = REPO / "run" / "k3d" / "kubeconfig"
SERVER_MANIFEST = REPO / "kubeconfs" / "server" / "server.yaml"
# (namespace, deployment) of the deployed system, in start order.
DEPLOYMENTS = (("v6-server", "v6-server"), ("v6-node", "v6-proxy"), ("v6-node", "v6-node"))


def researcher_key(manifest: Path = SERVER_MANIFEST) -> str:
    """The researcher key kubeconfs/server deploys (a public demo key)."""
    for doc in yaml.safe_load_all(manifest.read_text()):
        if doc and doc.get("kind") == "Secret" and doc["metadata"]["name"] == "v6-server-config":
            return yaml.safe_load(doc["stringData"]["server_config.yaml"])["researchers"][0]["api_key"]
    raise StackError(f"{manifest} holds no researcher key")


def not_ready(kubeconfig: Path, timeout: float = 5) -> list[str]:
    """The deployments of the system that are missing or without a ready replica ([] = all ready).
    Raises StackError when the cluster cannot be reached at all."""
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException
    try:
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
    except Exception as e:  # the client raises several unrelated types for a bad file
        raise StackError(f"{kubeconfig}: unusable kubeconfig: {type(e).__name__}: {e}") from e
    missing = []
    try:
        apps = client.AppsV1Api(api_client)
        for ns, name in DEPLOYMENTS:
            try:
                dep = apps.read_namespaced_deployment(name, ns, _request_timeout=timeout)
            except ApiException as e:
                if e.status in (403, 404):
                    missing.append(f"{ns}/{name} ({e.status} {e.reason})")
                    continue
                raise StackError(f"cluster of {kubeconfig}: {e.status} {e.reason}") from e
            except Exception as e:  # connection refused, DNS, TLS: the cluster is not reachable
                raise StackError(f"cluster of {kubeconfig} not reachable: {type(e).__name__}: "
                                 f"{str(e)[:200]}") from e
            if not (dep.status.ready_replicas or 0):
                missing.append(f"{ns}/{name} (no ready replica)")
    finally:
        api_client.close()
    return missing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortForward:
    """`kubectl port-forward svc/v6-server` on a free loopback port, for as long as it is open."""

    def __init__(self, kubeconfig: Path, log_path: Path, namespace: str = "v6-server",
                 service: str = "v6-server", port: int = 5000):
        if shutil.which("kubectl") is None:
            raise StackError("kubectl is not installed (needed for port-forward)")
        local = _free_port()
        self.url = f"http://127.0.0.1:{local}"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as logf:
            self.proc = subprocess.Popen(
                ["kubectl", "--kubeconfig", str(kubeconfig), "-n", namespace, "port-forward",
                 f"svc/{service}", f"{local}:{port}", "--address", "127.0.0.1"],
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.log_path = log_path
        try:
            wait_for(self._answers, 30, f"the port-forward to {namespace}/{service}", interval=0.2)
        except BaseException:
            self.close()
            raise

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise StackError(f"kubectl port-forward exited with {self.proc.returncode}: "
                             f"{self.log_path.read_text(errors='replace')[-500:]}")
        try:
            requests.get(f"{self.url}/api/version", timeout=2)
            return True  # any HTTP answer (401 without a key) means the server is there
        except requests.RequestException:
            return False

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> "PortForward":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def demo_k3d(column: str = "Age", kubeconfig: Path = K3D_KUBECONFIG, workdir: Path | None = None,
             python: str | None = None) -> int:
    """Run one avg task on the deployed system and print its result; 0 when it completed."""
    workdir = workdir or REPO / "run" / "demo-k3d"
    if not kubeconfig.is_file():
        print(f"no k3d cluster: {kubeconfig} is missing; `make demo K8S=k3d` creates it "
              "(or run make cluster images deploy)", file=sys.stderr)
        return 1
    try:
        print("waiting for the server, proxy and node deployments ...", flush=True)
        wait_for(lambda: not not_ready(kubeconfig), 180, "the deployments to be ready", interval=2)
        with PortForward(kubeconfig, workdir / "port-forward.log") as forward:
            print(f"emitting an avg task over column {column!r} of {DEMO_CSV.name} on node-a ...",
                  flush=True)
            result = subprocess.run(
                [python or sys.executable, "-m", "dummy_server.command_emitter", "--server", forward.url,
                 "--key", researcher_key(), "task", "--image", "v6-demo/avg", "--db", "default",
                 "--node", "node-a", "--input", json.dumps({"method": "avg", "column": column}),
                 "--wait", "--timeout", "300", "--format", "table"],
                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                capture_output=True, text=True, timeout=360)
    except StackError as e:
        print(f"demo failed: {e}", file=sys.stderr)
        return 1
    sys.stderr.write(result.stderr)
    print(result.stdout, flush=True)
    if result.returncode != 0:
        print("the task did not complete; see kubectl --kubeconfig "
              f"{kubeconfig} -n v6-node logs deploy/v6-node", file=sys.stderr)
        return 1
    return 0
