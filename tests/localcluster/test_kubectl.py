"""kubectl against the local cluster: HTTPS with the kubeconfig's CA and token, `apply -k
kubeconfs/`, Deployments rolling out (process mode: images.yaml runs v6-demo/* as processes),
get/describe/logs/delete. Skipped where kubectl is not installed.

kubectl validates with the server (``--validate=strict``, its default): it finds the
``fieldValidation`` parameter in the cluster's OpenAPI v3 documents (localcluster.apiserver.openapi)
and sends ``fieldValidation=Strict``, so a typo in a manifest is refused with the real server's
error (localcluster.apiserver.fieldvalidation).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import yaml

from localcluster.testing import LocalCluster, wait_until
from tests.static.support import REPO

KUBECTL = shutil.which("kubectl")


def _too_old() -> str | None:
    """kubectl before 1.21 embeds kustomize 2.0, which cannot read directory resources
    (Debian 12's kubernetes-client is 1.20)."""
    if KUBECTL is None:
        return "kubectl is not installed"
    r = subprocess.run([KUBECTL, "version", "--client", "-o", "json"], capture_output=True,
                       text=True, timeout=30, stdin=subprocess.DEVNULL)
    try:
        v = json.loads(r.stdout)["clientVersion"]
        minor = int("".join(ch for ch in v["minor"] if ch.isdigit()))
    except (ValueError, KeyError):
        return f"cannot read the kubectl version: {r.stdout[:200]} {r.stderr[:200]}"
    if (int(v["major"]), minor) < (1, 21):
        return f"kubectl {v['gitVersion']} is too old for `apply -k kubeconfs/` (needs 1.21+)"
    return None


_WHY_NOT = _too_old()
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=str(_WHY_NOT))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(state_dir=tmp_path_factory.mktemp("kubectl") / "state") as lc:
        yield lc


def kubectl(lc: LocalCluster, *args: str, check: bool = True, timeout: float = 60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["KUBECONFIG"] = str(lc.kubeconfig)
    r = subprocess.run([KUBECTL, *args], env=env, cwd=REPO, capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}):\n"
                             f"{r.stdout}\n{r.stderr}")
    return r


def test_kubeconfig_is_https_with_the_cluster_ca(cluster):
    kc = yaml.safe_load(cluster.kubeconfig.read_text())
    c = kc["clusters"][0]["cluster"]
    assert c["server"].startswith("https://127.0.0.1:")
    assert c["certificate-authority-data"]
    out = kubectl(cluster, "get", "namespaces", "-o", "name").stdout.split()
    assert "namespace/default" in out


def test_a_wrong_token_is_refused(cluster, tmp_path):
    kc = yaml.safe_load(cluster.kubeconfig.read_text())
    kc["users"][0]["user"]["token"] = "wrong"
    bad = tmp_path / "kubeconfig"
    bad.write_text(yaml.safe_dump(kc))
    r = subprocess.run([KUBECTL, "--kubeconfig", str(bad), "get", "namespaces"],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and "Unauthorized" in r.stderr + r.stdout


def test_apply_kubeconfs_and_roll_out_the_server(cluster):
    out = kubectl(cluster, "apply", "-k", "kubeconfs/").stdout
    # validation was left to the server: kubectl read OpenAPI v3, never the v2 document, and
    # sent fieldValidation=Strict (test_a_typo_in_a_manifest_is_refused_with_the_real_error)
    requests = cluster.metrics()["requests"]
    assert requests.get("get /openapi/v3", 0) >= 1 and "get /openapi/v2" not in requests
    for created in ("namespace/v6-node created", "serviceaccount/v6-node created",
                    "role.rbac.authorization.k8s.io/v6-node created",
                    "rolebinding.rbac.authorization.k8s.io/v6-node created",
                    "deployment.apps/v6-server created", "deployment.apps/v6-proxy created",
                    "deployment.apps/v6-node created", "service/v6-proxy created",
                    "networkpolicy.networking.k8s.io/v6-algorithms-egress created"):
        assert created in out, out
    names = kubectl(cluster, "get", "deployments", "-A", "-o", "name").stdout.split()
    assert sorted(names) == ["deployment.apps/v6-node", "deployment.apps/v6-proxy",
                             "deployment.apps/v6-server"]
    # A second apply computes three-way strategic merge patches that change nothing.
    again = kubectl(cluster, "apply", "-k", "kubeconfs/").stdout
    assert "deployment.apps/v6-server unchanged" in again, again
    assert "role.rbac.authorization.k8s.io/v6-node unchanged" in again, again

    r = kubectl(cluster, "-n", "v6-server", "rollout", "status", "deployment/v6-server",
                "--timeout=60s", timeout=90)
    assert 'deployment "v6-server" successfully rolled out' in r.stdout
    # server-side printing (localcluster/apiserver/tables.py)
    header, row = kubectl(cluster, "-n", "v6-server", "get", "deployment", "v6-server",
                          "-o", "wide").stdout.splitlines()
    assert header.split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS",
                              "IMAGES", "SELECTOR"]
    assert row.split()[:4] == ["v6-server", "1/1", "1", "1"]
    assert row.split()[5:] == ["server", "v6-demo/server:latest", "app=v6-server"]
    pods = kubectl(cluster, "-n", "v6-server", "get", "pods").stdout.splitlines()
    assert pods[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert pods[1].split()[1:3] == ["1/1", "Running"], pods
    described = kubectl(cluster, "-n", "v6-server", "describe", "deployment", "v6-server").stdout
    assert "MinimumReplicasAvailable" in described and "NewReplicaSetAvailable" in described
    logs = wait_until(lambda: kubectl(cluster, "-n", "v6-server", "logs",
                                      "deployment/v6-server", check=False).stdout,
                      timeout=20, what="server logs")
    assert "dummy_server" in logs or "listening" in logs.lower(), logs


def test_template_change_rolls_out_and_delete_removes_pods(cluster):
    kubectl(cluster, "apply", "-k", "kubeconfs/")
    kubectl(cluster, "-n", "v6-server", "rollout", "status", "deployment/v6-server",
            "--timeout=60s", timeout=90)
    before = set(kubectl(cluster, "-n", "v6-server", "get", "pods", "-l", "app=v6-server",
                         "-o", "name").stdout.split())
    kubectl(cluster, "-n", "v6-server", "rollout", "restart", "deployment/v6-server")
    kubectl(cluster, "-n", "v6-server", "rollout", "status", "deployment/v6-server",
            "--timeout=60s", timeout=90)
    after = set(kubectl(cluster, "-n", "v6-server", "get", "pods", "-l", "app=v6-server",
                        "-o", "name").stdout.split())
    assert len(after) == 1 and not before & after, (before, after)

    kubectl(cluster, "-n", "v6-server", "delete", "deployment", "v6-server", "--wait=true",
            "--timeout=60s", timeout=90)
    wait_until(lambda: not kubectl(cluster, "-n", "v6-server", "get", "pods", "-l",
                                   "app=v6-server", "-o", "name").stdout.strip(),
               timeout=30, what="the server's pods to go")


TYPO = """\
apiVersion: v1
kind: Service
metadata:
  name: typo
  namespace: default
spec:
  selector: {app: typo}
  ports:
  - port: 80
    targetPrt: 8080
"""


def test_a_typo_in_a_manifest_is_refused_with_the_real_error(cluster, tmp_path):
    manifest = tmp_path / "typo.yaml"
    manifest.write_text(TYPO)
    r = kubectl(cluster, "apply", "-f", str(manifest), check=False)
    assert r.returncode == 1, r
    assert r.stderr.strip() == (
        f'Error from server (BadRequest): error when creating "{manifest}": Service in version '
        '"v1" cannot be handled as a Service: strict decoding error: unknown field '
        '"spec.ports[0].targetPrt"')
    assert "NotFound" in kubectl(cluster, "get", "service", "typo", check=False).stderr
    # --validate=warn: kubectl sends Warn, the server drops the field and says so
    r = kubectl(cluster, "apply", "--validate=warn", "-f", str(manifest))
    assert "service/typo created" in r.stdout
    assert 'Warning: unknown field "spec.ports[0].targetPrt"' in r.stderr
    ports = json.loads(kubectl(cluster, "get", "service", "typo", "-o", "json").stdout)[
        "spec"]["ports"]
    assert ports == [{"port": 80, "protocol": "TCP", "targetPort": 80}]  # the typo set nothing
    # the object exists now: apply sends a strategic merge patch, refused as strictly
    manifest.write_text(TYPO.replace("targetPrt: 8080", "targetPort: 8080\n    protocl: TCP"))
    r = kubectl(cluster, "apply", "-f", str(manifest), check=False)
    assert r.returncode == 1, r
    assert r.stderr.startswith("The request is invalid: patch: Invalid value: ")
    assert r.stderr.strip().endswith(
        'strict decoding error: unknown field "spec.ports[0].protocl"')
    kubectl(cluster, "delete", "service", "typo")


def test_explain_reads_the_openapi_v3_documents(cluster):
    out = kubectl(cluster, "explain", "jobs.spec.backoffLimit").stdout
    assert "GROUP:      batch" in out and "FIELD: backoffLimit <integer>" in out
    assert "Specifies the number of retries before marking this job failed" in out


def test_get_nodes_prints_the_kubelets_node_as_a_real_server(cluster):
    out = kubectl(cluster, "get", "nodes").stdout.splitlines()
    assert out[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    name, status, roles, _age, version = out[1].split()
    assert (name, status, roles) == ("localcluster", "Ready", "<none>")
    assert version.startswith("v1.30.")
    wide = kubectl(cluster, "get", "nodes", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:7] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP",
                                   "EXTERNAL-IP"]
    assert wide[1].split()[5] == "127.0.0.1"
    kubectl(cluster, "cordon", "localcluster")
    try:
        assert kubectl(cluster, "get", "node", "localcluster").stdout.splitlines()[1].split()[1] \
            == "Ready,SchedulingDisabled"
    finally:
        kubectl(cluster, "uncordon", "localcluster")
    described = kubectl(cluster, "describe", "node", "localcluster").stdout
    assert "KubeletReady" in described and "Allocatable:" in described
