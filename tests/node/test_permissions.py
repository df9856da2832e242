"""The node's RBAC start check (node/permissions.py) and the table it checks (node/cluster.py
PERMISSIONS): the table is what the calls really do, the check names every missing permission,
and against the local cluster the repo's kubeconfs/base/rbac.yaml passes while a Role short of
one verb stops the node at start."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes
import pytest
import yaml

from localcluster.apiserver.requestinfo import parse
from node.cluster import PERMISSIONS, Cluster
from node.errors import MissingPermissionsError
from node.permissions import Permission, check, needed
from tests.node.test_manifests import make_config

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- the table is true
class FakeResponse:
    status, reason = 200, "OK"

    def __init__(self, body: dict) -> None:
        self.data = json.dumps(body).encode()

    def getheaders(self):
        return {}

    def stream(self, amt=None, decode_content=True):
        yield b'{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "2"}}}\n'

    def close(self):
        pass

    def release_conn(self):
        pass


def recording_cluster(conflict_on_create: bool = False) -> tuple[Cluster, list]:
    """A Cluster whose API client records each request's RequestInfo instead of sending it
    (conflict_on_create: every POST answers 409, as when the object exists)."""
    from kubernetes.client.rest import ApiException
    client = kubernetes.client.ApiClient(kubernetes.client.Configuration())
    seen: list = []

    def request(method, url, query_params=None, headers=None, body=None, post_params=None,
                _preload_content=True, _request_timeout=None):
        query = {k: str(v) for k, v in dict(query_params or []).items()}
        seen.append(parse(method, urlsplit(url).path, query))
        if conflict_on_create and method == "POST":
            raise ApiException(status=409, reason="Conflict")
        return FakeResponse({"metadata": {"resourceVersion": "1"}, "items": [],
                             "status": {"allowed": True}})
    client.rest_client.request = request
    return Cluster(client, "v6-jobs", 5.0), seen


CALLS = {
    "create_job": lambda c: c.create_job({"metadata": {"name": "j"}}),
    "get_job": lambda c: c.get_job("j"),
    "delete_job": lambda c: c.delete_job("j"),
    "list_objects": lambda c: [c.list_objects(k, "a=b") for k in ("jobs", "pods", "networkpolicies")],
    "watch": lambda c: [list(c.watch(k, "a=b", "1", 5)) for k in ("jobs", "pods", "networkpolicies")],
    "pod_log": lambda c: c.pod_log("p", "main", 100),
    "pod_events": lambda c: c.pod_events("p"),
    "job_events": lambda c: c.job_events("j"),
    "apply_network_policy": lambda c: c.apply_network_policy({"metadata": {"name": "n"}}),
    "get_service": lambda c: c.get_service("v6-node", "v6-proxy"),
    "access_review": lambda c: c.access_review({"nonResourceAttributes": {"path": "/", "verb": "get"}}),
    "dry_run_create": lambda c: [_each(lambda k=k: c.dry_run_create(
        {"kind": k, "metadata": {"name": "x"}})) for k in ("Job", "NetworkPolicy", "Pod")],
}


def _each(call):
    """Every kind is tried, whether or not the one before met a conflict."""
    try:
        call()
    except Exception:  # noqa: BLE001 - the 409 of a kind that does not handle it
        pass


def test_every_call_of_the_cluster_is_in_the_table():
    public = {name for name in vars(Cluster) if not name.startswith("_")
              and callable(getattr(Cluster, name))}
    assert public == set(PERMISSIONS) == set(CALLS)


@pytest.mark.parametrize("method", sorted(CALLS))
def test_the_table_is_what_each_call_requests(method):
    seen: list = []
    for conflict in (False, True):  # a create that meets an existing object: what follows
        cluster, requests_made = recording_cluster(conflict_on_create=conflict)
        try:
            CALLS[method](cluster)
        except Exception:  # noqa: BLE001 - the 409 itself, for calls that do not handle it
            pass
        seen += requests_made
    requested = {(i.verb, i.api_group, f"{i.resource}/{i.subresource}" if i.subresource
                  else i.resource) for i in seen}
    if method == "access_review":  # every authenticated user may create these
        assert requested == {("create", "authorization.k8s.io", "selfsubjectaccessreviews")}
        assert PERMISSIONS[method] == ()
        return
    assert requested == set(PERMISSIONS[method])
    namespaces = {i.namespace for i in seen}
    assert namespaces == ({"v6-node"} if method == "get_service" else {"v6-jobs"})


# --------------------------------------------------------------------------- what is checked
def test_needed_follows_the_configuration():
    config = make_config(proxy={"host": "v6-proxy", "port": 8080, "namespace": "v6-node",
                                "service": "v6-proxy"})
    perms = needed(config)
    assert Permission("watch", "batch", "jobs", "v6-jobs") in perms
    assert Permission("get", "", "services", "v6-node", "v6-proxy") in perms
    assert Permission("get", path="/version") not in perms  # live channel off
    assert all(p.namespace == "v6-jobs" for p in perms if p.resource != "services")
    polling = needed(make_config(completion={"mode": "poll"}))
    assert not [p for p in polling if p.verb == "watch"]
    live = needed(make_config(live={"enabled": True}))
    assert Permission("get", path="/version") in live


def test_permissions_read_as_review_attributes_and_as_text():
    log = Permission("get", "", "pods/log", "v6-jobs")
    assert log.attributes() == {"resourceAttributes": {
        "verb": "get", "group": "", "resource": "pods", "subresource": "log",
        "namespace": "v6-jobs"}}
    assert str(log) == "get pods/log in namespace v6-jobs"
    svc = Permission("get", "", "services", "v6-node", "v6-proxy")
    assert svc.attributes()["resourceAttributes"]["name"] == "v6-proxy"
    assert str(svc) == 'get services "v6-proxy" in namespace v6-node'
    assert str(Permission("watch", "batch", "jobs", "v6-jobs")) == "watch jobs.batch in namespace v6-jobs"
    assert Permission("get", path="/version").attributes() == {
        "nonResourceAttributes": {"path": "/version", "verb": "get"}}


def test_the_check_names_every_missing_permission_in_one_error():
    config = make_config()
    denied = {("watch", "jobs"), ("get", "pods")}

    def review(spec):
        a = spec.get("resourceAttributes") or {}
        return {"allowed": (a.get("verb"), a.get("resource")) not in denied}
    with pytest.raises(MissingPermissionsError) as e:
        check(review, config)
    assert e.value.missing == ["watch jobs.batch in namespace v6-jobs",
                               "get pods/log in namespace v6-jobs"]
    assert str(e.value).splitlines() == [
        "the node's Kubernetes identity lacks permissions it needs (RBAC):",
        "  - watch jobs.batch in namespace v6-jobs",
        "  - get pods/log in namespace v6-jobs",
        "grant them to the node's ServiceAccount (kubeconfs/base/rbac.yaml) and start the node again"]
    check(lambda spec: {"allowed": True}, config)  # all granted: passes


# --------------------------------------------------------------------------- against the cluster
def apply_repo_rbac(cluster) -> None:
    """kubeconfs/base/namespaces.yaml and rbac.yaml, as `kubectl apply -k` would make them."""
    client = cluster.api_client()
    core = kubernetes.client.CoreV1Api(client)
    rbac = kubernetes.client.RbacAuthorizationV1Api(client)
    docs = [d for f in ("namespaces.yaml", "rbac.yaml")
            for d in yaml.safe_load_all((REPO / "kubeconfs/base" / f).read_text()) if d]
    create = {"Namespace": lambda d: core.create_namespace(d),
              "ServiceAccount": lambda d: core.create_namespaced_service_account(
                  d["metadata"]["namespace"], d),
              "Role": lambda d: rbac.create_namespaced_role(d["metadata"]["namespace"], d),
              "RoleBinding": lambda d: rbac.create_namespaced_role_binding(
                  d["metadata"]["namespace"], d)}
    for d in docs:
        create[d["kind"]](d)


@pytest.fixture(scope="module")
def rbac_cluster():
    from localcluster.testing import LocalCluster
    with LocalCluster() as lc:
        apply_repo_rbac(lc)
        yield lc


def deployed_config(tmp_path, kubeconfig: Path, **over):
    """The node's configuration as deployed (proxy Service v6-proxy in v6-node, jobs in v6-jobs)
    with a kubeconfig of the node's ServiceAccount."""
    data = {"node_id": "node-a", "api_key": "k", "server_url": "http://127.0.0.1:9",
            "task_dir": str(tmp_path / "tasks"),
            "databases": [{"label": "default", "uri": "/data/employees.csv", "type": "csv"}],
            "kubernetes": {"kubeconfig": str(kubeconfig), "jobs_namespace": "v6-jobs"},
            "proxy": {"host": "v6-proxy.v6-node.svc.cluster.local", "port": 8080,
                      "namespace": "v6-node", "service": "v6-proxy"},
            "images": {"allowed": ["v6-demo/*"]}, "live": {"enabled": True},
            "health": {"host": "127.0.0.1", "port": 0}}
    data.update(over)
    return data


def node_cluster(rbac_cluster, tmp_path) -> tuple[Cluster, Path]:
    token = rbac_cluster.service_account_token("v6-node", "v6-node")
    kubeconfig = rbac_cluster.token_kubeconfig(token, tmp_path / "node.kubeconfig")
    return Cluster(rbac_cluster.token_client(token), "v6-jobs", 10.0), kubeconfig


def test_the_repo_rbac_gives_the_node_all_it_checks(rbac_cluster, tmp_path):
    from node.config import parse_config
    cluster, kubeconfig = node_cluster(rbac_cluster, tmp_path)
    config = parse_config(deployed_config(tmp_path, kubeconfig), {})
    check(cluster.access_review, config)
    # and the calls themselves pass (a 404 is an answer past authorization)
    assert cluster.list_objects("pods", "a=b")[0] == []
    from node.errors import NotFoundError
    with pytest.raises(NotFoundError):
        cluster.get_service("v6-node", "v6-proxy")


def _without_verb(cluster, verb: str, resource: str) -> None:
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.api_client())
    role = rbac.read_namespaced_role("v6-node", "v6-jobs")
    for rule in role.rules:
        if resource in rule.resources:
            rule.verbs = [v for v in rule.verbs if v != verb]
    rbac.replace_namespaced_role("v6-node", "v6-jobs", role)


def _restore(cluster) -> None:
    doc = next(d for d in yaml.safe_load_all((REPO / "kubeconfs/base/rbac.yaml").read_text())
               if d and d["kind"] == "Role" and d["metadata"]["namespace"] == "v6-jobs")
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.api_client())
    current = rbac.read_namespaced_role("v6-node", "v6-jobs")
    doc["metadata"]["resourceVersion"] = current.metadata.resource_version
    rbac.replace_namespaced_role("v6-node", "v6-jobs", doc)


def test_a_role_short_of_one_verb_stops_the_node_naming_it(rbac_cluster, tmp_path):
    _, kubeconfig = node_cluster(rbac_cluster, tmp_path)
    _without_verb(rbac_cluster, "watch", "jobs")
    try:
        config_file = tmp_path / "node.yaml"
        config_file.write_text(yaml.safe_dump(deployed_config(tmp_path, kubeconfig)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        r = subprocess.run([sys.executable, "-m", "node", "--config", str(config_file)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    finally:
        _restore(rbac_cluster)
    assert r.returncode == 1, r.stderr
    assert "cannot start: the node's Kubernetes identity lacks permissions it needs" in r.stderr
    assert "  - watch jobs.batch in namespace v6-jobs\n" in r.stderr
    assert r.stderr.count("  - ") == 1, r.stderr  # that one, nothing else


@pytest.mark.parametrize("variant", ["k3d", "pvc"])
def test_the_deployed_node_s_checks_all_pass_under_the_deployed_rbac(variant):
    """The same decision as the cluster's, offline: every permission the deployed configuration
    checks at start is granted by the deployed manifests (the authorizer of the local cluster)."""
    from localcluster.apiserver.rbac import ObjectPolicy, authorize, service_account_user
    from localcluster.apiserver.requestinfo import RequestInfo
    from tests.static.support import deployed_node_config, manifests
    policy = ObjectPolicy(manifests(variant))
    node = service_account_user("system:serviceaccount:v6-node:v6-node")
    config = deployed_node_config(variant)
    denied = []
    for p in needed(config):
        if p.path:
            continue  # /version: the default ClusterRoles every cluster has
        resource, _, sub = p.resource.partition("/")
        info = RequestInfo(True, "", p.verb, p.group, "v1", p.namespace, resource, sub, p.name)
        if not authorize(policy, node, info).allowed:
            denied.append(str(p))
    assert denied == []
    assert len(needed(config)) >= 12


def test_a_409_on_a_review_is_passing():
    """Reviews are stored nowhere; a 409 (injected faults give them) is worth a retry."""
    from node.errors import TransientClusterError
    cluster, _ = recording_cluster(conflict_on_create=True)
    with pytest.raises(TransientClusterError):
        cluster.access_review({"nonResourceAttributes": {"path": "/version", "verb": "get"}})
