"""In-cluster access (localcluster/apiserver/incluster.py): the ServiceAccount admission, bound tokens, the
root CA ConfigMap, the kube-api-access volume, KUBERNETES_SERVICE_* and hostPath on the node's
filesystem; and a pod that uses the official client's load_incluster_config()."""
from __future__ import annotations

import base64
import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from localcluster.apiserver.incluster import (ROOT_CA_CONFIGMAP, SA_MOUNT_PATH, InClusterAccess,
                                    RootCaPublisher, TokenClaims, TokenIssuer, admit_pod,
                                    automount)
from localcluster.kubelet.spec import build_env
from localcluster.kubelet.volumes import MountError, node_path, prepare_volumes
from localcluster.runtime.registry import Image
from localcluster.apiserver.resources import CONFIGMAPS, NAMESPACES, PODS, SERVICEACCOUNTS
from localcluster.apiserver.store import Store

CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _pod(name="p", ns="default", sa=None, automount=None, init=False) -> dict:
    spec: dict = {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "x"}]}
    if init:
        spec["initContainers"] = [{"name": "i", "image": "x"}]
    if sa:
        spec["serviceAccountName"] = sa
    if automount is not None:
        spec["automountServiceAccountToken"] = automount
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def _sa(name="default", automount=None) -> dict:
    sa: dict = {"metadata": {"name": name}}
    if automount is not None:
        sa["automountServiceAccountToken"] = automount
    return sa


def _create_admitted(store: Store, ns: str, pod: dict) -> dict:
    """Create a pod admitted as the store admits it (so these tests do not depend on the store's
    admission hook, which test_store_admits_pods_of_existing_accounts_only covers)."""
    sa = store.try_get(SERVICEACCOUNTS, ns, pod["spec"].get("serviceAccountName") or "default")
    admit_pod(pod, sa)
    return store.create(PODS, ns, pod)


def _access_mounts(pod: dict) -> list[dict]:
    spec = pod["spec"]
    return [m for c in (spec.get("initContainers") or []) + spec["containers"]
            for m in c.get("volumeMounts") or [] if m["mountPath"] == SA_MOUNT_PATH]


# --- admission ----------------------------------------------------------------------------------

def test_admission_adds_the_kube_api_access_volume_to_every_container():
    pod = _pod(init=True)
    admit_pod(pod, _sa(), suffix="abcde")
    [vol] = pod["spec"]["volumes"]
    assert vol["name"] == "kube-api-access-abcde"
    sources = vol["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
    assert sources[1]["configMap"]["name"] == ROOT_CA_CONFIGMAP
    assert sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert _access_mounts(pod) == [{"name": vol["name"], "readOnly": True,
                                    "mountPath": SA_MOUNT_PATH}] * 3


@pytest.mark.parametrize("pod_value,sa_value,expected", [
    (None, None, True), (False, None, False), (None, False, False), (True, False, True),
    (False, True, False)])
def test_automount_the_pod_decides_then_the_account(pod_value, sa_value, expected):
    pod = _pod(automount=pod_value)
    assert automount(pod, _sa(automount=sa_value)) is expected
    admit_pod(pod, _sa(automount=sa_value))
    assert bool(pod["spec"].get("volumes")) is expected


def test_admission_without_the_account_adds_nothing():
    pod = _pod(sa="missing")
    admit_pod(pod, None)
    assert "volumes" not in pod["spec"] and not _access_mounts(pod)


def test_admission_keeps_a_container_s_own_mount_at_the_token_path():
    pod = _pod()
    own = {"name": "mine", "mountPath": SA_MOUNT_PATH}
    pod["spec"]["containers"][0]["volumeMounts"] = [own]
    admit_pod(pod, _sa())
    assert pod["spec"]["containers"][0]["volumeMounts"] == [own]
    assert len(pod["spec"]["containers"][1]["volumeMounts"]) == 1


def test_store_admits_pods_of_existing_accounts_only():
    store = Store()
    store.create(SERVICEACCOUNTS, "default", _sa("robot"))
    with_sa = store.create(PODS, "default", _pod("a", sa="robot"))
    without = store.create(PODS, "default", _pod("b", sa="nobody"))
    [vol] = with_sa["spec"]["volumes"]
    assert vol["name"].startswith("kube-api-access-") and len(vol["name"]) == 21
    assert len(_access_mounts(with_sa)) == 2
    assert not without["spec"].get("volumes")


# --- tokens -------------------------------------------------------------------------------------

CLAIMS = TokenClaims("ns", "robot", "sa-uid", "pod-1", "pod-uid")


def test_token_round_trip_and_claims():
    issuer = TokenIssuer()
    token = issuer.issue(CLAIMS)
    assert issuer.verify(token) == CLAIMS
    body = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert body["sub"] == "system:serviceaccount:ns:robot"
    assert body["kubernetes.io"]["pod"] == {"name": "pod-1", "uid": "pod-uid"}


def test_tokens_of_another_cluster_tampered_or_expired_are_refused():
    issuer = TokenIssuer()
    token = issuer.issue(CLAIMS)
    assert TokenIssuer().verify(token) is None  # another cluster's key
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["kubernetes.io"]["namespace"] = "kube-system"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert issuer.verify(f"{head}.{forged}.{sig}") is None
    assert issuer.verify(issuer.issue(CLAIMS, now=time.time() - 100, expiration_seconds=10)) is None
    for garbage in ("", "a.b", "a.b.c", "x" * 300):
        assert issuer.verify(garbage) is None


def test_authenticate_only_while_the_pod_and_account_live():
    store = Store()
    store.create(SERVICEACCOUNTS, "default", _sa("robot"))
    pod = store.create(PODS, "default", _pod("a", sa="robot"))
    access = InClusterAccess(store, 6443)
    token = access.token_for(pod)
    assert access.authenticate(f"Bearer {token}") == "system:serviceaccount:default:robot"
    assert access.authenticate(f"Basic {token}") is None
    assert access.authenticate("Bearer nope") is None
    store.delete(PODS, "default", "a", grace_period_seconds=0)
    store.create(PODS, "default", _pod("a", sa="robot"))  # same name, another pod
    assert access.authenticate(f"Bearer {token}") is None


def test_token_of_a_recreated_account_is_refused():
    store = Store()
    store.create(SERVICEACCOUNTS, "default", _sa("robot"))
    pod = store.create(PODS, "default", _pod("a", sa="robot"))
    access = InClusterAccess(store, 6443)
    token = access.token_for(pod)
    store.delete(SERVICEACCOUNTS, "default", "robot")
    store.create(SERVICEACCOUNTS, "default", _sa("robot"))
    assert access.authenticate(f"Bearer {token}") is None


def test_service_env_points_at_the_api_for_the_pod_s_network():
    access = InClusterAccess(Store(), 6443, pod_api_host="10.244.0.1")
    env = access.service_env(_pod())
    assert env["KUBERNETES_SERVICE_HOST"] == "10.244.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == env["KUBERNETES_SERVICE_PORT_HTTPS"] == "6443"
    assert env["KUBERNETES_PORT_6443_TCP_ADDR"] == "10.244.0.1"
    host_net = _pod()
    host_net["spec"]["hostNetwork"] = True
    assert access.service_env(host_net)["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"


def test_container_env_overrides_the_service_env_and_can_use_it():
    pod = {"metadata": {"name": "p", "namespace": "default"}, "spec": {}}
    c = {"name": "a", "env": [{"name": "KUBERNETES_SERVICE_PORT", "value": "1"},
                              {"name": "API", "value": "$(KUBERNETES_SERVICE_HOST):443"}]}
    image = Image(reference="x", image_id="sha256:x", entrypoint=("x",))
    env = build_env(pod, c, image, lambda *a: None, lambda *a: None, {},
                    service_env={"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "2"})
    assert env["KUBERNETES_SERVICE_PORT"] == "1" and env["API"] == "h:443"


# --- the root CA ConfigMap ---------------------------------------------------------------------

def test_root_ca_is_published_with_the_first_pod_with_a_token_and_kept():
    store = Store()
    publisher = RootCaPublisher(store, CA)
    publisher.start()
    try:
        store.create(NAMESPACES, None, {"metadata": {"name": "team"}})
        store.create(SERVICEACCOUNTS, "team", _sa())
        _create_admitted(store, "team", _pod("no-token", ns="team", automount=False))
        assert store.try_get(CONFIGMAPS, "team", ROOT_CA_CONFIGMAP) is None
        _create_admitted(store, "team", _pod("with-token", ns="team"))
        assert store.get(CONFIGMAPS, "team", ROOT_CA_CONFIGMAP)["data"] == {"ca.crt": CA.decode()}
        store.patch(CONFIGMAPS, "team", ROOT_CA_CONFIGMAP, {"data": {"ca.crt": "evil"}}, "merge")
        assert store.get(CONFIGMAPS, "team", ROOT_CA_CONFIGMAP)["data"]["ca.crt"] == CA.decode()
        store.delete(CONFIGMAPS, "team", ROOT_CA_CONFIGMAP)
        assert store.get(CONFIGMAPS, "team", ROOT_CA_CONFIGMAP)["data"]["ca.crt"] == CA.decode()
        assert store.try_get(CONFIGMAPS, "default", ROOT_CA_CONFIGMAP) is None
    finally:
        publisher.close()


# --- volumes ------------------------------------------------------------------------------------

def _prepare(store: Store, pod: dict, tmp_path: Path, **kw):
    def lookup(res):
        return lambda ns, name: store.try_get(res, ns, name)
    from localcluster.apiserver.resources import SECRETS
    return prepare_volumes(pod, tmp_path / "pod", tmp_path / "state", lookup(SECRETS),
                           lookup(CONFIGMAPS), **kw)


def test_kube_api_access_volume_holds_token_ca_and_namespace(tmp_path):
    store = Store()
    publisher = RootCaPublisher(store, CA)
    publisher.start()
    store.create(NAMESPACES, None, {"metadata": {"name": "team"}})
    store.create(SERVICEACCOUNTS, "team", _sa())
    pod = _create_admitted(store, "team", _pod(ns="team"))
    publisher.close()
    access = InClusterAccess(store, 6443)
    [(name, vol)] = _prepare(store, pod, tmp_path, tokens=access.token_for).items()
    assert vol.readonly and name.startswith("kube-api-access-")
    assert (vol.path / "namespace").read_text() == "team"
    assert (vol.path / "ca.crt").read_bytes() == CA
    token = (vol.path / "token").read_text()
    assert access.authenticate(f"Bearer {token}") == "system:serviceaccount:team:default"


def test_token_projection_without_an_issuer_is_a_mount_error(tmp_path):
    store = Store()
    store.create(SERVICEACCOUNTS, "default", _sa())
    pod = _create_admitted(store, "default", _pod())
    with pytest.raises(MountError, match="no service account tokens"):
        _prepare(store, pod, tmp_path)


def _host_path_pod(path: str, kind: str) -> dict:
    pod = _pod()
    pod["spec"]["volumes"] = [{"name": "h", "hostPath": {"path": path, "type": kind}}]
    return pod


def test_host_path_lives_under_the_node_root(tmp_path):
    root = tmp_path / "node"
    (root / "var/lib/data").mkdir(parents=True)
    vols = _prepare(Store(), _host_path_pod("/var/lib/data", "Directory"), tmp_path, host_root=root)
    assert vols["h"].path == root / "var/lib/data"
    vols = _prepare(Store(), _host_path_pod("/var/lib/new/tasks", "DirectoryOrCreate"), tmp_path,
                    host_root=root)
    assert (root / "var/lib/new/tasks").is_dir() and vols["h"].path == root / "var/lib/new/tasks"
    assert node_path(Path("/x/y"), None) == Path("/x/y")


def test_host_path_checks_apply_on_the_node(tmp_path):
    root = tmp_path / "node"
    root.mkdir()
    # /tmp exists on this machine, but not on the node
    with pytest.raises(MountError, match="is not a directory"):
        _prepare(Store(), _host_path_pod("/tmp", "Directory"), tmp_path, host_root=root)


def test_host_path_cannot_leave_the_node_through_a_symlink(tmp_path):
    root = tmp_path / "node"
    (root / "var").mkdir(parents=True)
    (root / "var" / "escape").symlink_to("/etc")
    with pytest.raises(MountError, match="leaves the node's filesystem"):
        _prepare(Store(), _host_path_pod("/var/escape", "Directory"), tmp_path, host_root=root)


# --- a pod that talks to the API with load_incluster_config() -------------------------------------

LIST_PODS = textwrap.dedent("""
    import json, os, sys
    from kubernetes import client, config
    config.load_incluster_config()
    ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
    names = [p.metadata.name for p in client.CoreV1Api().list_namespaced_pod(ns).items]
    print("report", json.dumps({"namespace": ns, "pods": names,
                      "host": os.environ["KUBERNETES_SERVICE_HOST"]}))
""")


NODE_IMAGE = "v6-demo/node:latest"  # has python and the kubernetes client


def _docker_reason() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    from localcluster.runtime.docker_client import DockerError, SyncDocker, docker_unavailable, q
    why = docker_unavailable()
    if why:
        return why
    try:
        SyncDocker().request("GET", f"/images/{q(NODE_IMAGE)}/json")
    except DockerError:
        return f"image {NODE_IMAGE} is not built"
    return None


@pytest.fixture(scope="module", params=["process", "docker"])
def incluster_cluster(request):
    """(cluster, the image and command prefix of a python pod) per runtime."""
    from localcluster.testing import LocalCluster
    from tests.localcluster.kubelet_fixtures import TEST_IMAGES
    if request.param == "process":
        if os.geteuid() != 0:
            pytest.skip("pods with volumes need mount namespaces (root)")
        with LocalCluster(images=[TEST_IMAGES]) as lc:
            yield lc, "test/python", []
        return
    why = _docker_reason()
    if why:
        pytest.skip(f"docker runtime: {why}")
    with LocalCluster(extra_args=["--runtime", "docker"], start_timeout=60,
                      stop_timeout=30) as lc:
        yield lc, NODE_IMAGE, ["python"]


@pytest.mark.root
def test_pod_lists_pods_with_load_incluster_config(incluster_cluster, tmp_path):
    import kubernetes

    from localcluster.testing import wait_until
    cluster, image, python = incluster_cluster
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    ns = "incluster-" + os.urandom(3).hex()
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_service_account(ns, {"metadata": {"name": "lister"}})
    # the cluster enforces RBAC: the account may list pods here, and nothing else
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.api_client())
    rbac.create_namespaced_role(ns, {"metadata": {"name": "pod-lister"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]})
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "pod-lister"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-lister"},
        "subjects": [{"kind": "ServiceAccount", "name": "lister"}]})  # namespace: the binding's

    def python_pod(name: str, code: str, **spec) -> dict:
        main = {"name": "main", "image": image, "args": ["-c", code]}
        if python:
            main = {"name": "main", "image": image, "command": [*python, "-c", code]}
        return {"metadata": {"name": name}, "spec": {
            "serviceAccountName": "lister", "restartPolicy": "Never", "containers": [main], **spec}}
    core.create_namespaced_pod(ns, python_pod("lister", LIST_PODS))
    core.create_namespaced_pod(ns, python_pod(
        "no-token", f"import os; print(os.path.exists({SA_MOUNT_PATH!r}))",
        automountServiceAccountToken=False))

    def finished(name):
        phase = core.read_namespaced_pod(name, ns).status.phase
        return phase if phase in ("Succeeded", "Failed") else None
    for name in ("lister", "no-token"):
        wait_until(lambda: finished(name), 90, f"pod {name} to finish")
    log = core.read_namespaced_pod_log("lister", ns)
    assert finished("lister") == "Succeeded", log
    # (a prefix: the client would parse a log that is all JSON into a dict)
    report = json.loads(log.strip().splitlines()[-1].removeprefix("report "))
    assert report["namespace"] == ns
    assert sorted(report["pods"]) == ["lister", "no-token"]
    # where pods reach the API: this host's loopback, or the pod network's gateway
    assert report["host"] == cluster.network().get("gateway", "127.0.0.1")
    assert core.read_namespaced_pod_log("no-token", ns).strip() == "False"
