"""The whole system on one machine: local cluster, server, proxy and nodes as real processes.

Used by `make demo` (`python -m localcluster demo`) and by the integration tests. Every process
writes its log to `<workdir>/logs/<name>.log`; everything started is stopped by `close()`.

Pod network: by default (``pod_network="auto"``) the local cluster isolates every pod in its own
network namespace when it can (root, ``ip``, ``nft``; see `localcluster.network.netns`), with the proxy as
the only way out: the proxy then listens on the cluster's gateway address (`proxy_host`) at a port
picked before the cluster starts (the cluster's ``--egress-allow gateway:PORT``), and the nodes'
config points there. Without root or the tools it falls back to the host's network (logged).

Each node gets a proxy of its own, started with that node's API key (the server accepts a run's
container token only through its node's proxy, CONTRACTS §4); isolated pod networks allow up to
`PROXY_SLOTS` proxy ports.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import requests
import yaml

from localcluster.testing import wait_until

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEMO_CSV = REPO / "algorithms" / "avg" / "data" / "employees.csv"
JOBS_NAMESPACE = "v6-jobs"
PROXY_NAMESPACE = "v6-node"  # where the proxies' Services are (node config proxy.namespace)
PROXY_SLOTS = 4  # proxy ports allowed out of isolated pod networks: one per node


class StackError(Exception):
    pass


def wait_for(pred: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll pred until it returns something truthy; StackError after the deadline."""
    try:
        return wait_until(pred, timeout, what, interval)
    except TimeoutError as e:
        raise StackError(str(e)) from e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM) -> int | None:
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode


@dataclass
class NodeSpec:
    node_id: str
    api_key: str
    databases: list[dict]
    completion_mode: str = "watch"
    extra: dict = field(default_factory=dict)


class Stack:
    """Start parts one by one (tests pick what they need) or all with `start_all()`."""

    def __init__(self, workdir: Path, *, researcher_key: str | None = None,
                 python: str | None = None, pod_network: str = "auto"):
        self.workdir = Path(workdir)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.python = python or sys.executable
        self.researcher_key = researcher_key or "researcher-" + secrets.token_hex(8)
        self.token_secret = secrets.token_hex(16)
        self.procs: dict[str, Proc] = {}
        self.cluster = None
        self.kubeconfig: Path | None = None
        self.server_url: str | None = None
        self.proxy_port: int | None = None  # the first node's proxy (see proxy_ports)
        self.proxy_ports: dict[str, int] = {}  # node id -> the port of that node's proxy
        self.pod_network = pod_network  # host | isolated | auto (for the local cluster)
        self.network: dict = {"mode": "host"}  # as the local cluster describes it
        self.proxy_host = "127.0.0.1"  # where the proxy listens (the gateway when isolated)
        self._proxy_listen_ports: list[int] = []  # allowed out of isolated pods, in order
        self.nodes: dict[str, NodeSpec] = {}

    # -- processes -----------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str], env: dict | None = None) -> Proc:
        log_path = self.workdir / "logs" / f"{name}.log"
        full_env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(log_path, "ab") as logf:
            popen = subprocess.Popen([self.python, *args], cwd=REPO, env=full_env,
                                     stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        proc = Proc(name, popen, log_path)
        self.procs[name] = proc
        return proc

    def _wait_port_file(self, proc: Proc, path: Path, timeout: float = 30) -> int:
        def ready():
            if not proc.alive():
                raise StackError(f"{proc.name} exited with {proc.popen.returncode}:\n"
                                 f"{proc.log_text()[-3000:]}")
            try:
                text = path.read_text().strip()
            except OSError:
                return None
            return int(text) if text.isdigit() else None
        return wait_for(ready, timeout, f"{proc.name} to listen")

    # -- parts ----------------------------------------------------------------------------------
    def start_cluster(self, *, kubeconfig: Path | None = None, pod_network: str | None = None,
                      **kwargs) -> None:
        """The local stand-in, or an existing cluster when a kubeconfig is given."""
        if kubeconfig:
            self.kubeconfig = Path(kubeconfig)
        else:
            from localcluster.network.netns import GATEWAY, isolation_unavailable
            from localcluster.testing import LocalCluster
            mode = pod_network or self.pod_network
            if mode == "auto":
                why = isolation_unavailable()
                if why:
                    log.warning("pod network isolation is off (%s): pods share the host's "
                                "network", why)
                mode = "host" if why else "isolated"
            if mode == "isolated":
                # the proxies' ports must be allowed before they can listen on the gateway
                self._proxy_listen_ports = [free_port() for _ in range(PROXY_SLOTS)]
                kwargs["egress_allow"] = [*kwargs.get("egress_allow", []),
                                          *(f"{GATEWAY}:{p}" for p in self._proxy_listen_ports)]
            state_dir = self.workdir / "cluster"
            state_dir.mkdir(parents=True, exist_ok=True)
            self.cluster = LocalCluster(state_dir=state_dir, pod_network=mode, **kwargs)
            self.cluster.start()
            self.kubeconfig = Path(self.cluster.kubeconfig)
            self.network = self.cluster.network()
            if self.network.get("mode") == "isolated":
                self.proxy_host = self.network["gateway"]
        self._ensure_namespace(JOBS_NAMESPACE)

    @staticmethod
    def _transient_retry(fn, what: str, deadline_s: float = 30.0):
        """Call fn, again after a 5xx/429 answer: fault-injection tests make the API fail at
        random, and the harness's own set-up calls must not fail the test for it."""
        from kubernetes.client.rest import ApiException
        deadline, delay = time.monotonic() + deadline_s, 0.05
        while True:
            try:
                return fn()
            except ApiException as e:
                if not (e.status == 429 or (e.status or 0) >= 500) or time.monotonic() > deadline:
                    raise StackError(f"{what}: {e.status} {e.reason}") from e
            time.sleep(delay)  # back-off between attempts, not synchronisation
            delay = min(delay * 2, 1.0)

    def _ensure_namespace(self, name: str) -> None:
        from kubernetes import client, config
        from kubernetes.client.rest import ApiException
        api = config.new_client_from_config(config_file=str(self.kubeconfig))

        def create():
            try:
                client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
            except ApiException as e:
                if e.status != 409:
                    raise
        try:
            self._transient_retry(create, f"create namespace {name}")
        finally:
            api.close()

    def _ensure_proxy_service(self, proxy: dict) -> None:
        """The Service a node reads its proxy's address from. The proxies here are processes
        outside the cluster and the stand-in has no kube-proxy, so the Service has no selector
        and its ClusterIP is the proxy's own listen address (port = targetPort)."""
        from kubernetes import client, config
        from kubernetes.client.rest import ApiException
        self._ensure_namespace(proxy["namespace"])
        ports = [{"name": "http", "port": proxy["port"], "targetPort": proxy["port"],
                  "protocol": "TCP"}]
        body = {"metadata": {"name": proxy["service"], "namespace": proxy["namespace"]},
                "spec": {"clusterIP": self.proxy_host, "ports": ports}}
        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        core = client.CoreV1Api(api)

        def apply():
            try:
                core.create_namespaced_service(proxy["namespace"], body)
            except ApiException as e:
                if e.status != 409:
                    raise
                core.patch_namespaced_service(proxy["service"], proxy["namespace"],
                                              {"spec": {"ports": ports}})
        try:
            self._transient_retry(apply, f"apply Service {proxy['service']}")
        finally:
            api.close()

    def _node_kubeconfig(self, node_id: str, proxy: dict) -> Path:
        """The node's kubeconfig with its ServiceAccount's token (localcluster.node_identity);
        made once per node, so a restarted node (under injected faults too) reuses it."""
        path = self.workdir / "nodes" / node_id / "kubeconfig"
        if path.exists():
            return path
        from kubernetes import config

        from localcluster import node_identity
        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        try:
            self._transient_retry(lambda: node_identity.apply_repo_rbac(api), "apply the node RBAC")
            self._transient_retry(lambda: node_identity.grant_proxy_service(
                api, proxy["namespace"], proxy["service"]), f"grant {proxy['service']}")
            return self._transient_retry(lambda: node_identity.write_node_kubeconfig(
                api, self.kubeconfig, path), f"a token for node {node_id}")
        finally:
            api.close()

    def start_server(self, nodes: list[NodeSpec], *, port: int = 0) -> None:
        self.nodes.update({n.node_id: n for n in nodes})
        cfg = {
            "host": "127.0.0.1", "port": port,
            "database": str(self.workdir / "server.sqlite"),
            "token_secret": self.token_secret,
            "nodes": [{"id": n.node_id, "api_key": n.api_key} for n in self.nodes.values()],
            "researchers": [{"name": "researcher", "api_key": self.researcher_key}],
        }
        path = self.workdir / "server_config.yaml"
        path.write_text(yaml.safe_dump(cfg))
        port_file = self.workdir / "server.port"
        port_file.unlink(missing_ok=True)
        proc = self._spawn("server", ["-m", "dummy_server", "--config", str(path),
                                      "--port-file", str(port_file)])
        self.server_port = self._wait_port_file(proc, port_file)
        self.server_url = f"http://127.0.0.1:{self.server_port}"

    def restart_server(self) -> None:
        old = self.procs.pop("server", None)
        if old is not None:
            old.stop()
        port = self.server_port
        path = self.workdir / "server_config.yaml"
        cfg = yaml.safe_load(path.read_text())
        cfg["port"] = port  # nodes reconnect to the same address
        path.write_text(yaml.safe_dump(cfg))
        port_file = self.workdir / "server.port"
        port_file.unlink(missing_ok=True)
        proc = self._spawn("server", ["-m", "dummy_server", "--config", str(path),
                                      "--port-file", str(port_file)])
        self._wait_port_file(proc, port_file)

    def start_proxy(self, node_id: str | None = None) -> None:
        """The proxy of one node, or of every node of the server that has none yet. Each one
        forwards with its node's API key; the first node's is named `proxy` (`proxy_port`)."""
        if not self.nodes:
            raise StackError("start the server with its nodes before their proxies")
        for nid in [node_id] if node_id else [n for n in self.nodes if n not in self.proxy_ports]:
            first = not self.proxy_ports
            name = "proxy" if first else f"proxy-{nid}"
            port = 0
            if self._proxy_listen_ports:
                slot = len(self.proxy_ports)
                if slot >= len(self._proxy_listen_ports):
                    raise StackError(f"no proxy port left for node {nid}: isolated pod networks "
                                     f"allow {len(self._proxy_listen_ports)} proxies")
                port = self._proxy_listen_ports[slot]
            port_file = self.workdir / f"{name}.port"
            port_file.unlink(missing_ok=True)
            proc = self._spawn(name, ["-m", "dummy_proxy", "--listen", f"{self.proxy_host}:{port}",
                                      "--upstream", self.server_url, "--port-file", str(port_file)],
                               env={"V6_PROXY_NODE_API_KEY": self.nodes[nid].api_key})
            self.proxy_ports[nid] = self._wait_port_file(proc, port_file)
            if first:
                self.proxy_port = self.proxy_ports[nid]

    def node_config(self, spec: NodeSpec) -> dict:
        proxy_service = f"v6-proxy-{spec.node_id}"
        cfg = {
            "node_id": spec.node_id,
            "server_url": self.server_url,
            "task_dir": str(self.workdir / "nodes" / spec.node_id / "tasks"),
            "databases": spec.databases,
            "kubernetes": {"kubeconfig": str(self.kubeconfig), "jobs_namespace": JOBS_NAMESPACE},
            # algorithm pods have no DNS: the node finds its proxy's Service (made by
            # start_node) and gives the pods its name through hostAliases
            "proxy": {"host": f"{proxy_service}.{PROXY_NAMESPACE}.svc.cluster.local",
                      "port": self.proxy_ports.get(spec.node_id, self.proxy_port or 0),
                      "namespace": PROXY_NAMESPACE, "service": proxy_service},
            "images": {"allowed": ["v6-demo/*"]},
            "job": {"deadline_seconds": 300, "termination_grace_seconds": 5},
            "completion": {"mode": spec.completion_mode},
            "health": {"host": "127.0.0.1", "port": free_port()},
            # several nodes share this host: each picks a free port for its event socket
            "live": {"node_pub_port": 0, **self._isolation_failure()},
        }
        for key, value in spec.extra.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        return cfg

    def _isolation_failure(self) -> dict:
        """Pods on the host's network are not isolated at all. Their sidecars do not probe: the
        probe's DNS check would ask this machine's resolver, and the tests send nothing off the
        machine; runs say "not run" in their provenance. Should a probe run anyway (a config
        that turns it on), its failure is reported, not made a failed run."""
        if self.cluster is not None and self.network.get("mode") == "host":
            return {"on_isolation_failure": "report", "isolation_probe": False}
        return {}

    def start_node(self, node_id: str, *, wait_ready: bool = True) -> Proc:
        spec = self.nodes[node_id]
        cfg = self.node_config(spec)
        self._ensure_proxy_service(cfg["proxy"])
        if self.cluster is not None and cfg["kubernetes"].get("kubeconfig") == str(self.kubeconfig):
            # on the local stand-in the node runs as its ServiceAccount, under the repo's RBAC
            cfg["kubernetes"]["kubeconfig"] = str(self._node_kubeconfig(node_id, cfg["proxy"]))
        path = self.workdir / f"node-{node_id}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        proc = self._spawn(f"node-{node_id}", ["-m", "node", "--config", str(path)],
                           env={"NODE_API_KEY": spec.api_key})
        if wait_ready:
            url = f"http://127.0.0.1:{cfg['health']['port']}/readyz"

            def ready():
                if not proc.alive():
                    raise StackError(f"node {node_id} exited with {proc.popen.returncode}:\n"
                                     f"{proc.log_text()[-3000:]}")
                try:
                    return requests.get(url, timeout=1).status_code == 200
                except requests.RequestException:
                    return False
            wait_for(ready, 30, f"node {node_id} to be ready")
        return proc

    def stop_node(self, node_id: str, sig: int = signal.SIGTERM) -> int | None:
        return self.procs.pop(f"node-{node_id}").stop(sig=sig)

    def start_all(self, node_ids=("node-a",), databases: list[dict] | None = None) -> None:
        databases = databases or [{"label": "default", "uri": str(DEMO_CSV), "type": "csv"}]
        specs = [NodeSpec(n, f"key-{n}-" + secrets.token_hex(8), databases) for n in node_ids]
        self.start_cluster()
        self.start_server(specs)
        self.start_proxy()
        for spec in specs:
            self.start_node(spec.node_id)

    # -- researcher side -----------------------------------------------------------------------------
    def emitter(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.python, "-m", "dummy_server.command_emitter", "--server", self.server_url,
             "--key", self.researcher_key, *args],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
            text=True, timeout=timeout)

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.researcher_key}"}
        return requests.request(method, f"{self.server_url}{path}", headers=headers,
                                timeout=10, **kwargs)

    def create_task(self, **body) -> dict:
        resp = self.api("POST", "/api/task", json=body)
        if resp.status_code != 201:
            raise StackError(f"task not created: {resp.status_code} {resp.text}")
        return resp.json()

    def wait_task(self, task_id: int, timeout: float = 60) -> dict:
        """The task once every run has a result."""
        def done():
            task = self.api("GET", f"/api/task/{task_id}").json()
            runs = [self.api("GET", f"/api/run/{r['id']}").json() for r in task["runs"]]
            return task | {"runs": runs} if all(r.get("result") for r in runs) else None
        return wait_for(done, timeout, f"task {task_id} to finish", interval=0.2)

    # -- teardown ------------------------------------------------------------------------------------
    def close(self) -> None:
        # nodes first (they hold watches on the cluster), the cluster last (it stops pods)
        for name in sorted(self.procs, key=lambda n: (not n.startswith("node-"), n)):
            self.procs[name].stop()
        self.procs.clear()
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def logs(self) -> str:
        return "\n".join(f"----- {name} -----\n{p.log_text()[-4000:]}"
                         for name, p in self.procs.items())
