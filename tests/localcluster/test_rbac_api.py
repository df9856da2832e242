"""RBAC over HTTP: requests with a service-account token (TokenRequest) are authorized by the
cluster's Roles and bindings, refused with the real server's 403; discovery and the access reviews
work for any account through the default ClusterRoles; the admin token keeps every right."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import kubernetes
import pytest
import requests
from kubernetes.client.rest import ApiException

from localcluster.testing import LocalCluster

G = "rbac.authorization.k8s.io"
KUBECTL = shutil.which("kubectl")


@pytest.fixture
def account(cluster, api):
    """(namespace, account name, token) of a new ServiceAccount with no roles."""
    ns = "rbac-" + uuid.uuid4().hex[:6]
    core = api[0]
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_service_account(ns, {"metadata": {"name": "robot"}})
    return ns, "robot", cluster.service_account_token(ns, "robot")


def user(ns: str) -> str:
    return f"system:serviceaccount:{ns}:robot"


def grant(cluster: LocalCluster, ns: str, rules: list[dict], name: str = "robot") -> None:
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.api_client())
    rbac.create_namespaced_role(ns, {"metadata": {"name": name}, "rules": rules})
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": name}, "roleRef": {"apiGroup": G, "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": ns}]})


def status_of(e: ApiException) -> dict:
    return json.loads(e.body)


def raw(cluster: LocalCluster, method: str, path: str, token: str, **kw) -> requests.Response:
    return requests.request(method, cluster.server + path, verify=cluster.verify, timeout=10,
                            headers={"Authorization": f"Bearer {token}"}, **kw)


def test_any_account_may_read_discovery_and_the_version(cluster, account):
    _, _, token = account
    client = cluster.token_client(token)
    assert kubernetes.client.VersionApi(client).get_code().git_version == "v1.30.0"
    assert kubernetes.client.CoreApi(client).get_api_versions().versions == ["v1"]
    groups = kubernetes.client.ApisApi(client).get_api_versions().groups
    assert "authorization.k8s.io" in [g.name for g in groups]
    resources = kubernetes.client.CoreV1Api(client).get_api_resources().resources
    assert {"serviceaccounts/token"} <= {r.name for r in resources}
    rbac = raw(cluster, "GET", "/apis/rbac.authorization.k8s.io/v1", token).json()
    assert {"clusterroles", "clusterrolebindings"} <= {r["name"] for r in rbac["resources"]}
    reviews = raw(cluster, "GET", "/apis/authorization.k8s.io/v1", token).json()["resources"]
    assert {r["name"]: r["verbs"] for r in reviews} == {
        "selfsubjectaccessreviews": ["create"], "selfsubjectrulesreviews": ["create"]}


def test_refusals_are_the_real_403(cluster, account):
    ns, _, token = account
    client = cluster.token_client(token)
    batch = kubernetes.client.BatchV1Api(client)
    with pytest.raises(ApiException) as e:
        batch.list_namespaced_job(ns)
    assert e.value.status == 403
    assert status_of(e.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'jobs.batch is forbidden: User "{user(ns)}" cannot list resource "jobs" in '
                   f'API group "batch" in the namespace "{ns}"',
        "reason": "Forbidden", "details": {"group": "batch", "kind": "jobs"}, "code": 403}
    core = kubernetes.client.CoreV1Api(client)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod_log("p", ns)
    body = status_of(e.value)
    assert body["message"] == (f'pods "p" is forbidden: User "{user(ns)}" cannot get resource '
                               f'"pods/log" in API group "" in the namespace "{ns}"')
    assert body["details"] == {"name": "p", "kind": "pods"}
    with pytest.raises(ApiException) as e:
        core.list_namespace()
    assert status_of(e.value)["message"] == (
        f'namespaces is forbidden: User "{user(ns)}" cannot list resource "namespaces" in API '
        f'group "" at the cluster scope')
    # the namespace object itself is in its namespace
    with pytest.raises(ApiException) as e:
        core.read_namespace(ns)
    assert status_of(e.value)["message"].endswith(
        f'cannot get resource "namespaces" in API group "" in the namespace "{ns}"')
    r = raw(cluster, "GET", "/foo", token)
    assert r.status_code == 403 and r.json()["message"] == (
        f'forbidden: User "{user(ns)}" cannot get path "/foo"')
    assert r.json()["details"] == {}
    # authorized before routing: an unknown type is refused, not "not found"
    r = raw(cluster, "GET", "/apis/example.com/v1/widgets", token)
    assert r.status_code == 403
    assert r.json()["message"].endswith('API group "example.com" at the cluster scope')
    # a request without a valid token is not authorized at all: 401
    assert raw(cluster, "GET", "/version", "nope").status_code == 401


def test_watch_is_authorized_as_watch(cluster, account):
    ns, _, token = account
    grant(cluster, ns, [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}])
    core = kubernetes.client.CoreV1Api(cluster.token_client(token))
    assert core.list_namespaced_pod(ns).items == []
    r = raw(cluster, "GET", f"/api/v1/namespaces/{ns}/pods?watch=true", token, stream=True)
    try:
        assert r.status_code == 403
        assert r.json()["message"] == (f'pods is forbidden: User "{user(ns)}" cannot watch '
                                       f'resource "pods" in API group "" in the namespace "{ns}"')
    finally:
        r.close()
    watch = kubernetes.watch.Watch()
    with pytest.raises(ApiException) as e:
        for _ in watch.stream(core.list_namespaced_pod, ns, timeout_seconds=1):
            pass
    assert e.value.status == 403


def test_a_binding_grants_at_once_and_its_removal_revokes(cluster, api, account):
    ns, _, token = account
    batch = kubernetes.client.BatchV1Api(cluster.token_client(token))
    with pytest.raises(ApiException):
        batch.list_namespaced_job(ns)
    grant(cluster, ns, [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list"]}])
    assert batch.list_namespaced_job(ns).items == []
    with pytest.raises(ApiException) as e:  # only list
        batch.delete_collection_namespaced_job(ns)
    assert "cannot deletecollection resource" in status_of(e.value)["message"]
    kubernetes.client.RbacAuthorizationV1Api(cluster.api_client()).delete_namespaced_role(
        "robot", ns)
    with pytest.raises(ApiException) as e:
        batch.list_namespaced_job(ns)
    assert status_of(e.value)["message"].endswith(f': RBAC: role.{G} "robot" not found')


def test_a_cluster_role_bound_in_a_namespace_grants_there_only(cluster, api, account):
    ns, _, token = account
    other = ns + "-b"
    api[0].create_namespace({"metadata": {"name": other}})
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.api_client())
    rbac.create_cluster_role({"metadata": {"name": f"{ns}-reader"}, "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]})
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": G, "kind": "ClusterRole", "name": f"{ns}-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot"}]})
    core = kubernetes.client.CoreV1Api(cluster.token_client(token))
    assert core.list_namespaced_config_map(ns).items == []
    for forbidden in (lambda: core.list_namespaced_config_map(other),
                      core.list_config_map_for_all_namespaces):
        with pytest.raises(ApiException) as e:
            forbidden()
        assert e.value.status == 403


def test_self_subject_access_review(cluster, account):
    ns, _, token = account
    grant(cluster, ns, [{"apiGroups": [""], "resources": ["services"], "resourceNames": ["one"],
                         "verbs": ["get"]}])
    authz = kubernetes.client.AuthorizationV1Api(cluster.token_client(token))

    def review(**attrs):
        key = "nonResourceAttributes" if "path" in attrs else "resourceAttributes"
        return authz.create_self_subject_access_review({"spec": {key: attrs}}).status
    allowed = review(verb="get", resource="services", namespace=ns, name="one")
    assert allowed.allowed and allowed.reason == (
        f'RBAC: allowed by RoleBinding "robot/{ns}" of Role "robot" to ServiceAccount "robot/{ns}"')
    assert not review(verb="get", resource="services", namespace=ns, name="two").allowed
    assert not review(verb="list", resource="services", namespace=ns).allowed
    assert review(path="/version", verb="get").allowed
    assert not review(path="/logs", verb="get").allowed
    # exactly one of the two attribute kinds
    for spec in ({}, {"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"verb": "get"}}):
        r = raw(cluster, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", token,
                json={"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                      "spec": spec})
        assert r.status_code == 422 and r.json()["reason"] == "Invalid", r.text
    # reviews can only be created: the account may not list them (authorized first), and the
    # admin, who may, is told the method is not served
    path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    assert raw(cluster, "GET", path, token).status_code == 403
    r = raw(cluster, "GET", path, cluster.token)
    assert r.status_code == 405 and r.json()["reason"] == "MethodNotAllowed"
    admin = kubernetes.client.AuthorizationV1Api(cluster.api_client())
    assert admin.create_self_subject_access_review({"spec": {"resourceAttributes": {
        "verb": "delete", "resource": "nodes"}}}).status.allowed


def test_self_subject_rules_review(cluster, account):
    ns, _, token = account
    grant(cluster, ns, [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "watch"]}])
    authz = kubernetes.client.AuthorizationV1Api(cluster.token_client(token))
    status = authz.create_self_subject_rules_review({"spec": {"namespace": ns}}).status
    rules = [(r.api_groups, r.resources, r.verbs) for r in status.resource_rules]
    assert (["batch"], ["jobs"], ["list", "watch"]) in rules
    assert (["authorization.k8s.io"], ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
            ["create"]) in rules
    assert any("/version" in r.non_resource_ur_ls for r in status.non_resource_rules)
    assert status.incomplete is False


def test_the_admin_token_keeps_every_right_and_sees_the_default_roles(cluster, api):
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.api_client())
    roles = {r.metadata.name for r in rbac.list_cluster_role().items}
    assert {"cluster-admin", "system:discovery", "system:basic-user",
            "system:public-info-viewer"} <= roles
    binding = rbac.read_cluster_role_binding("system:discovery")
    assert [(s.kind, s.name) for s in binding.subjects] == [("Group", "system:authenticated")]
    assert api[0].list_namespace().items  # no Role names the admin


def test_token_requests(cluster, api, account):
    ns, _, _ = account
    core = api[0]
    with pytest.raises(ApiException) as e:
        core.create_namespaced_service_account_token("robot", ns, {"spec": {"expirationSeconds": 599}})
    assert e.value.status == 422
    assert "may not specify a duration less than 10 minutes" in status_of(e.value)["message"]
    with pytest.raises(ApiException) as e:
        core.create_namespaced_service_account_token("nobody", ns, {"spec": {}})
    assert e.value.status == 404
    # a token for another audience does not open the API
    other = core.create_namespaced_service_account_token(
        "robot", ns, {"spec": {"audiences": ["vault"]}}).status.token
    assert raw(cluster, "GET", "/version", other).status_code == 401
    # a token bound to a pod dies with it
    core.create_namespaced_pod(ns, {"metadata": {"name": "p"}, "spec": {
        "serviceAccountName": "robot", "automountServiceAccountToken": False,
        "containers": [{"name": "c", "image": "none"}]}})
    pod = core.read_namespaced_pod("p", ns)
    bound = core.create_namespaced_service_account_token("robot", ns, {"spec": {"boundObjectRef": {
        "apiVersion": "v1", "kind": "Pod", "name": "p", "uid": pod.metadata.uid}}}).status.token
    assert raw(cluster, "GET", "/version", bound).status_code == 200
    core.delete_namespaced_pod("p", ns, grace_period_seconds=0)
    # (deletion with grace 0 removes the pod, or marks it; either ends the token)
    assert raw(cluster, "GET", "/version", bound).status_code == 401


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kubectl_create_token_and_auth_can_i(cluster, account, tmp_path):
    ns, _, _ = account
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}

    def kubectl(kubeconfig, *args):
        return subprocess.run([KUBECTL, f"--kubeconfig={kubeconfig}", *args], env=env,
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    r = kubectl(cluster.kubeconfig, "-n", ns, "create", "token", "robot")
    assert r.returncode == 0, r.stderr
    robot = cluster.token_kubeconfig(r.stdout.strip(), tmp_path / "robot.kubeconfig")
    grant(cluster, ns, [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list"]}])
    assert kubectl(robot, "-n", ns, "auth", "can-i", "list", "jobs.batch").stdout.strip() == "yes"
    r = kubectl(robot, "-n", ns, "auth", "can-i", "watch", "jobs.batch")
    assert (r.returncode, r.stdout.strip()) == (1, "no")
    r = kubectl(robot, "-n", ns, "get", "pods")
    assert r.returncode == 1
    assert (f'Error from server (Forbidden): pods is forbidden: User "{user(ns)}" cannot list '
            f'resource "pods" in API group "" in the namespace "{ns}"') in r.stderr
    assert kubectl(robot, "-n", ns, "get", "jobs").returncode == 0
    assert kubectl(cluster.kubeconfig, "auth", "can-i", "*", "*").stdout.strip() == "yes"


def test_an_account_grants_only_what_it_holds(cluster, account):
    ns, _, token = account
    grant(cluster, ns, [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
                        {"apiGroups": [G], "resources": ["roles", "rolebindings"],
                         "verbs": ["create", "update", "patch"]}])
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.token_client(token))
    rbac.create_namespaced_role(ns, {"metadata": {"name": "held"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]})
    with pytest.raises(ApiException) as e:
        rbac.create_namespaced_role(ns, {"metadata": {"name": "more"}, "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "delete"]}]})
    assert e.value.status == 403
    groups = f'["system:serviceaccounts" "system:serviceaccounts:{ns}" "system:authenticated"]'
    assert status_of(e.value)["message"] == (
        f'roles.{G} "more" is forbidden: user "{user(ns)}" (groups={groups}) is attempting to '
        f'grant RBAC permissions not currently held:\n'
        '{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}')
    with pytest.raises(ApiException) as e:  # a patch is checked on its result
        rbac.patch_namespaced_role("held", ns, {"rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})
    assert e.value.status == 403
    # binding a role the account does not hold (cluster-admin) needs the bind verb
    binding = {"metadata": {"name": "admin"},
               "roleRef": {"apiGroup": G, "kind": "ClusterRole", "name": "cluster-admin"},
               "subjects": [{"kind": "ServiceAccount", "name": "robot"}]}
    with pytest.raises(ApiException) as e:
        rbac.create_namespaced_role_binding(ns, binding)
    assert e.value.status == 403 and "not currently held" in status_of(e.value)["message"]
    admin = kubernetes.client.RbacAuthorizationV1Api(cluster.api_client())
    admin.create_namespaced_role(ns, {"metadata": {"name": "binder"}, "rules": [
        {"apiGroups": [G], "resources": ["clusterroles"], "resourceNames": ["cluster-admin"],
         "verbs": ["bind"]}]})
    admin.create_namespaced_role_binding(ns, {
        "metadata": {"name": "binder"}, "roleRef": {"apiGroup": G, "kind": "Role", "name": "binder"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot"}]})
    rbac.create_namespaced_role_binding(ns, binding)  # now allowed: bind on that ClusterRole
