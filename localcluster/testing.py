"""LocalCluster: a `python -m localcluster serve` subprocess for tests and benchmarks.

    with LocalCluster() as lc:
        v1 = kubernetes.client.CoreV1Api(lc.api_client())
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from localcluster import kubeconfig as kc
from localcluster.apiserver.tls import CA_FILE

REPO = Path(__file__).resolve().parent.parent


class LocalClusterError(Exception):
    pass


class LocalCluster:
    def __init__(self, *, images: list[Path] | None = None, history: int | None = None,
                 state_dir: Path | None = None, start_timeout: float = 30.0,
                 stop_timeout: float = 10.0, extra_args: list[str] | None = None,
                 pod_network: str | None = None, egress_allow: list[str] | None = None,
                 runtime: str | None = None) -> None:
        """pod_network / egress_allow: ``serve --pod-network`` / ``--egress-allow``
        (see localcluster.network.netns); the server's default (host) when None. runtime:
        ``serve --runtime`` (process, docker or fake); the server's default when None."""
        self._own_dir = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="localcluster-"))
        self.kubeconfig = self.state_dir / "kubeconfig"
        self._args = ["--state-dir", str(self.state_dir), "--port", "0"]
        for img in images or []:
            self._args += ["--images", str(img)]
        if history is not None:
            self._args += ["--history", str(history)]
        if pod_network is not None:
            self._args += ["--pod-network", pod_network]
        for egress in egress_allow or []:
            self._args += ["--egress-allow", egress]
        if runtime is not None:
            self._args += ["--runtime", runtime]
        self._args += extra_args or []
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen | None = None
        self._stderr_path = self.state_dir / "localcluster.stderr"
        self._session: requests.Session | None = None
        self.server = ""
        self.token = ""
        # for requests' verify=: the cluster's CA file when it serves https (the default)
        self.verify: str | bool = True
        self._api_clients: list[Any] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "LocalCluster":
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        stderr = open(self._stderr_path, "wb")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "localcluster", "serve", *self._args],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=stderr, start_new_session=True)
        finally:
            stderr.close()
        deadline = time.monotonic() + self._start_timeout
        while not self.kubeconfig.exists():
            problem = None
            if self._proc.poll() is not None:
                problem = f"local cluster exited with {self._proc.returncode} before serving"
            elif time.monotonic() > deadline:
                problem = f"local cluster not ready after {self._start_timeout:.0f}s"
            if problem:
                stderr = self.stderr()
                self.stop()
                raise LocalClusterError(f"{problem}:\n{stderr}")
            time.sleep(0.02)
        self._connect()
        return self

    @property
    def pid(self) -> int | None:
        """The serve process (its children are the pods' containers in the process runtime)."""
        return self._proc.pid if self._proc is not None else None

    def _connect(self) -> None:
        """Read the kubeconfig the cluster wrote; open the session of metrics()/faults()."""
        self.server, self.token = kc.read_token(self.kubeconfig)
        if self.server.startswith("https://"):
            self.verify = str(self.state_dir / CA_FILE)
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {self.token}"

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL (the whole process group) after the deadline."""
        for client in self._api_clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        self._api_clients.clear()
        if self._session is not None:
            self._session.close()
            self._session = None
        code = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(self._stop_timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                    self._proc.wait()
            code = self._proc.returncode
            try:  # pods the controllers may have left in the group
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._proc = None
        if self._own_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return code

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def network(self) -> dict:
        """The pod network as the cluster describes it (``DIR/network.json``): ``mode``
        (host|isolated) and, when isolated, ``gateway``, ``subnet``, ``egress``, ``index``."""
        try:
            return json.loads((self.state_dir / "network.json").read_text())
        except (OSError, ValueError):
            return {"mode": "host"}

    def stderr(self) -> str:
        try:
            return self._stderr_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    # ------------------------------------------------------------------ clients
    def api_client(self):
        """A kubernetes ApiClient for this cluster (closed by stop())."""
        from kubernetes import config

        client = config.new_client_from_config(config_file=str(self.kubeconfig))
        self._api_clients.append(client)
        return client

    def service_account_token(self, namespace: str, name: str,
                              expiration_seconds: int = 3600) -> str:
        """A token of the ServiceAccount (a TokenRequest, as `kubectl create token`): requests
        made with it are authorized by RBAC, unlike the admin token's."""
        from kubernetes import client as k8s
        core = k8s.CoreV1Api(self.api_client())
        answer = core.create_namespaced_service_account_token(
            name, namespace, {"spec": {"expirationSeconds": expiration_seconds}})
        return answer.status.token

    def token_kubeconfig(self, token: str, path: Path) -> Path:
        """A kubeconfig of this cluster that authenticates with token instead of the admin's."""
        kc.write(path, self.server, token, ca_pem=kc.read_ca(self.kubeconfig))
        return path

    def token_client(self, token: str):
        """A kubernetes ApiClient that authenticates with token (closed by stop())."""
        from kubernetes import client as k8s
        configuration = k8s.Configuration()
        configuration.host = self.server
        configuration.ssl_ca_cert = self.verify if isinstance(self.verify, str) else None
        configuration.api_key = {"authorization": f"Bearer {token}"}
        client = k8s.ApiClient(configuration)
        self._api_clients.append(client)
        return client

    def _request(self, method: str, path: str, **kw) -> Any:
        if self._session is None:
            raise LocalClusterError("the local cluster is not running")
        # verify per request: REQUESTS_CA_BUNDLE in the environment beats a session's verify
        r = self._session.request(method, self.server + path, timeout=10, verify=self.verify,
                                  **kw)
        if r.status_code >= 400:
            raise LocalClusterError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json()

    def metrics(self) -> dict:
        return self._request("GET", "/localcluster/metrics")

    def reset_metrics(self) -> dict:
        return self._request("POST", "/localcluster/metrics/reset")

    def set_faults(self, faults: dict) -> dict:
        return self._request("PUT", "/localcluster/faults", json=faults)

    def faults(self) -> dict:
        return self._request("GET", "/localcluster/faults")


def require_isolation() -> None:
    """For tests of isolated pod networks: skip without root, `ip` or `nft` — except in CI as
    root (env CI set), which must test isolation and fails instead."""
    import pytest

    from localcluster.network.netns import isolation_unavailable
    why = isolation_unavailable()
    if why and os.environ.get("CI") and os.geteuid() == 0:
        pytest.fail(f"CI cannot make isolated pod networks: {why} (.ci/run must install "
                    f"iproute2 and nftables)")
    if why:
        pytest.skip(f"isolated pod networks are not possible here: {why}")


def wait_until(pred, timeout: float = 5.0, what: str = "condition", interval: float = 0.02):
    """Poll pred until it returns something truthy (returned); TimeoutError after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)
