"""The RBAC authorizer (localcluster/apiserver/rbac.py) and the request attributes it decides on
(requestinfo.py): pure tests over real RBAC objects, the repo's kubeconfs/base/rbac.yaml among
them; RBAC objects' defaulting and validation in the store."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from localcluster.apiserver import rbac, rbac_bootstrap
from localcluster.apiserver.errors import ApiError
from localcluster.apiserver.rbac import ObjectPolicy, User, authorize, service_account_user
from localcluster.apiserver.requestinfo import RequestInfo, parse
from localcluster.apiserver.resources import CLUSTERROLEBINDINGS, CLUSTERROLES, ROLEBINDINGS, ROLES
from localcluster.apiserver.store import Store

REPO = Path(__file__).resolve().parents[2]
NODE = service_account_user("system:serviceaccount:v6-node:v6-node")
OTHER = service_account_user("system:serviceaccount:v6-jobs:default")
G = "rbac.authorization.k8s.io"


def repo_rbac() -> list[dict]:
    return [d for d in yaml.safe_load_all((REPO / "kubeconfs/base/rbac.yaml").read_text()) if d]


def res(verb, resource, namespace="", name="", group="", subresource="") -> RequestInfo:
    return RequestInfo(True, "", verb, group, "v1", namespace, resource, subresource, name)


def url(verb, path) -> RequestInfo:
    return RequestInfo(False, path, verb)


# --------------------------------------------------------------------------- request attributes
@pytest.mark.parametrize("method, path, query, expected", [
    ("GET", "/api/v1/namespaces/ns/pods", {}, ("list", "", "ns", "pods", "", "")),
    ("GET", "/api/v1/namespaces/ns/pods", {"watch": "true"}, ("watch", "", "ns", "pods", "", "")),
    ("GET", "/api/v1/namespaces/ns/pods", {"watch": "0"}, ("list", "", "ns", "pods", "", "")),
    ("GET", "/api/v1/namespaces/ns/pods", {"watch": "True", "fieldSelector": "metadata.name=p"},
     ("watch", "", "ns", "pods", "", "p")),
    ("GET", "/api/v1/namespaces/ns/pods/p/log", {}, ("get", "", "ns", "pods", "log", "p")),
    ("POST", "/apis/batch/v1/namespaces/ns/jobs", {}, ("create", "batch", "ns", "jobs", "", "")),
    ("DELETE", "/apis/batch/v1/namespaces/ns/jobs", {}, ("deletecollection", "batch", "ns", "jobs", "", "")),
    ("DELETE", "/apis/batch/v1/namespaces/ns/jobs/j", {}, ("delete", "batch", "ns", "jobs", "", "j")),
    ("PATCH", "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/x", {},
     ("patch", "networking.k8s.io", "ns", "networkpolicies", "", "x")),
    ("PUT", "/api/v1/namespaces/ns/pods/p/status", {}, ("update", "", "ns", "pods", "status", "p")),
    # a namespace's own object is in that namespace; its status is a namespace subresource
    ("GET", "/api/v1/namespaces/ns", {}, ("get", "", "ns", "namespaces", "", "ns")),
    ("PUT", "/api/v1/namespaces/ns/finalize", {}, ("update", "", "ns", "namespaces", "finalize", "ns")),
    ("GET", "/api/v1/namespaces", {}, ("list", "", "", "namespaces", "", "")),
    ("GET", "/api/v1/nodes/n1", {}, ("get", "", "", "nodes", "", "n1")),
    ("GET", "/api/v1/watch/namespaces/ns/pods", {}, ("watch", "", "ns", "pods", "", "")),
    ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {},
     ("create", "authorization.k8s.io", "", "selfsubjectaccessreviews", "", "")),
    # a type that is not served is still a resource request (authorized before the 404)
    ("GET", "/apis/example.com/v1/widgets", {}, ("list", "example.com", "", "widgets", "", "")),
])
def test_resource_requests_are_parsed_as_the_real_server_does(method, path, query, expected):
    info = parse(method, path, query)
    assert info.is_resource
    assert (info.verb, info.api_group, info.namespace, info.resource, info.subresource,
            info.name) == expected


@pytest.mark.parametrize("method, path", [
    ("GET", "/version"), ("GET", "/api"), ("GET", "/api/v1"), ("GET", "/apis"),
    ("GET", "/apis/batch"), ("GET", "/apis/batch/v1"), ("GET", "/openapi/v2"), ("POST", "/foo"),
    ("GET", "/"),
])
def test_discovery_and_other_paths_are_non_resource_requests(method, path):
    info = parse(method, path, {})
    assert not info.is_resource and info.verb == method.lower() and info.path == path


def test_service_accounts_are_in_their_groups():
    assert NODE.groups == ("system:serviceaccounts", "system:serviceaccounts:v6-node",
                           "system:authenticated")


# --------------------------------------------------------------------------- the repo's RBAC
NODE_ALLOWED = [
    res("create", "jobs", "v6-jobs", group="batch"),
    res("get", "jobs", "v6-jobs", "v6-run-1", group="batch"),
    res("list", "jobs", "v6-jobs", group="batch"),
    res("watch", "jobs", "v6-jobs", group="batch"),
    res("delete", "jobs", "v6-jobs", "v6-run-1", group="batch"),
    res("list", "pods", "v6-jobs"), res("watch", "pods", "v6-jobs"),
    res("get", "pods", "v6-jobs", "p", subresource="log"),
    res("list", "events", "v6-jobs"),
    res("create", "networkpolicies", "v6-jobs", group="networking.k8s.io"),
    res("patch", "networkpolicies", "v6-jobs", "v6-node-a", group="networking.k8s.io"),
    res("get", "services", "v6-node", "v6-proxy"),
]
NODE_DENIED = [
    res("get", "pods", "v6-jobs", "p"),                 # granted once, never used: trimmed
    res("get", "networkpolicies", "v6-jobs", "x", group="networking.k8s.io"),
    res("update", "jobs", "v6-jobs", "j", group="batch"),
    res("deletecollection", "jobs", "v6-jobs", group="batch"),
    res("create", "pods", "v6-jobs"),
    res("get", "pods", "v6-jobs", "p", subresource="exec"),
    res("list", "secrets", "v6-jobs"),
    res("list", "jobs", "default", group="batch"),      # another namespace
    res("list", "jobs", "", group="batch"),             # the cluster scope
    res("get", "services", "v6-node", "other"),         # resourceNames: that one Service only
    res("list", "services", "v6-node"),                 # a list has no name
    res("watch", "services", "v6-node"),
    res("list", "services", "v6-node", "v6-proxy"),     # pinned to the name, but only get
    res("get", "services", "v6-jobs", "v6-proxy"),
    url("get", "/metrics"),
]


def test_the_repo_rbac_grants_the_node_exactly_what_it_uses():
    policy = ObjectPolicy(repo_rbac())
    for info in NODE_ALLOWED:
        assert authorize(policy, NODE, info).allowed, info
    for info in NODE_DENIED:
        assert not authorize(policy, NODE, info).allowed, info
    # another account of the namespace gets nothing
    assert not any(authorize(policy, OTHER, info).allowed for info in NODE_ALLOWED)


def test_the_reason_names_the_binding_that_allows():
    d = authorize(ObjectPolicy(repo_rbac()), NODE, res("list", "jobs", "v6-jobs", group="batch"))
    assert d.reason == ('RBAC: allowed by RoleBinding "v6-node/v6-jobs" of Role "v6-node" to '
                        'ServiceAccount "v6-node/v6-node"')


# --------------------------------------------------------------------------- rule semantics
def role(name, rules, namespace=None, kind="Role"):
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": kind, "metadata": meta, "rules": rules}


def binding(name, role_name, subjects, namespace=None, role_kind="Role"):
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": "RoleBinding" if namespace else "ClusterRoleBinding", "metadata": meta,
            "roleRef": {"apiGroup": G, "kind": role_kind, "name": role_name},
            "subjects": subjects}


SA_SUBJECT = {"kind": "ServiceAccount", "name": "v6-node", "namespace": "v6-node"}


def allows(rules, info, user=NODE) -> bool:
    policy = ObjectPolicy([role("r", rules, "ns"), binding("b", "r", [SA_SUBJECT], "ns")])
    return authorize(policy, user, info).allowed


@pytest.mark.parametrize("rule_resources, requested, sub, expected", [
    (["pods"], "pods", "", True),
    (["pods"], "pods", "log", False),            # a subresource is its own resource
    (["pods/log"], "pods", "log", True),
    (["pods/log"], "pods", "", False),
    (["*"], "pods", "log", True),
    (["*/log"], "pods", "log", True),             # "*/sub": that subresource of everything
    (["*/log"], "pods", "", False),
    (["*/status"], "pods", "log", False),
    (["pods/*"], "pods", "log", False),           # no wildcard: only "*" and "*/sub" are
    (["pods/*"], "pods", "", False),
])
def test_resources_and_subresources(rule_resources, requested, sub, expected):
    rules = [{"apiGroups": [""], "resources": rule_resources, "verbs": ["get"]}]
    assert allows(rules, res("get", requested, "ns", "p", subresource=sub)) is expected


def test_wildcards_in_verbs_and_groups():
    rules = [{"apiGroups": ["*"], "resources": ["jobs"], "verbs": ["*"]}]
    assert allows(rules, res("deletecollection", "jobs", "ns", group="batch"))
    assert allows(rules, res("watch", "jobs", "ns", group="example.com"))
    assert not allows(rules, res("get", "pods", "ns", "p"))
    rules = [{"apiGroups": ["apps"], "resources": ["jobs"], "verbs": ["get"]}]
    assert not allows(rules, res("get", "jobs", "ns", "j", group="batch"))


def test_resource_names_need_a_name_in_the_request():
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["c"],
              "verbs": ["get", "list", "watch", "create", "update", "delete"]}]
    assert allows(rules, res("get", "configmaps", "ns", "c"))
    assert allows(rules, res("update", "configmaps", "ns", "c"))
    assert not allows(rules, res("get", "configmaps", "ns", "d"))
    for verb in ("list", "watch", "create"):
        assert not allows(rules, res(verb, "configmaps", "ns")), verb
    info = parse("GET", "/api/v1/namespaces/ns/configmaps",
                 {"watch": "1", "fieldSelector": "metadata.name=c"})
    assert allows(rules, info)


def test_role_binding_to_a_cluster_role_grants_in_its_namespace_only():
    policy = ObjectPolicy([
        role("reader", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
             kind="ClusterRole"),
        binding("b", "reader", [SA_SUBJECT], "ns", role_kind="ClusterRole")])
    assert authorize(policy, NODE, res("list", "pods", "ns")).allowed
    assert not authorize(policy, NODE, res("list", "pods", "other")).allowed
    assert not authorize(policy, NODE, res("list", "pods", "")).allowed


def test_cluster_role_binding_grants_everywhere_and_at_the_cluster_scope():
    policy = ObjectPolicy([
        role("reader", [{"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["list"]}],
             kind="ClusterRole"),
        binding("b", "reader", [SA_SUBJECT], role_kind="ClusterRole")])
    for ns in ("ns", "other", ""):
        assert authorize(policy, NODE, res("list", "pods", ns)).allowed
    assert authorize(policy, NODE, res("list", "nodes")).allowed


def test_a_role_binding_cannot_use_a_role_of_another_namespace():
    policy = ObjectPolicy([
        role("r", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}], "other"),
        binding("b", "r", [SA_SUBJECT], "ns")])
    d = authorize(policy, NODE, res("list", "pods", "ns"))
    assert not d.allowed and d.reason == f'RBAC: role.{G} "r" not found'


@pytest.mark.parametrize("subject, expected", [
    ({"kind": "ServiceAccount", "name": "v6-node", "namespace": "v6-node"}, True),
    ({"kind": "ServiceAccount", "name": "v6-node"}, False),   # defaults to the binding's: ns
    ({"kind": "ServiceAccount", "name": "v6-node", "namespace": "ns"}, False),
    ({"kind": "User", "apiGroup": G, "name": "system:serviceaccount:v6-node:v6-node"}, True),
    ({"kind": "User", "apiGroup": G, "name": "v6-node"}, False),
    ({"kind": "Group", "apiGroup": G, "name": "system:serviceaccounts:v6-node"}, True),
    ({"kind": "Group", "apiGroup": G, "name": "system:serviceaccounts"}, True),
    ({"kind": "Group", "apiGroup": G, "name": "system:authenticated"}, True),
    ({"kind": "Group", "apiGroup": G, "name": "system:serviceaccounts:ns"}, False),
    ({"kind": "Group", "apiGroup": G, "name": "system:masters"}, False),
])
def test_subjects(subject, expected):
    policy = ObjectPolicy([role("r", [{"apiGroups": [""], "resources": ["pods"],
                                       "verbs": ["list"]}], "ns"),
                           binding("b", "r", [subject], "ns")])
    assert authorize(policy, NODE, res("list", "pods", "ns")).allowed is expected


def test_a_service_account_subject_without_namespace_is_the_binding_namespace_s():
    user = service_account_user("system:serviceaccount:ns:robot")
    policy = ObjectPolicy([role("r", [{"apiGroups": [""], "resources": ["pods"],
                                       "verbs": ["list"]}], "ns"),
                           binding("b", "r", [{"kind": "ServiceAccount", "name": "robot"}], "ns")])
    assert authorize(policy, user, res("list", "pods", "ns")).allowed


def test_non_resource_urls_exact_or_by_prefix_and_only_from_cluster_bindings():
    policy = ObjectPolicy(rbac_bootstrap.bootstrap_objects())
    anyone = User("alice", ("system:authenticated",))
    for path in ("/version", "/version/", "/api", "/api/v1", "/apis", "/apis/batch/v1",
                 "/openapi/v2", "/healthz"):
        assert authorize(policy, anyone, url("get", path)).allowed, path
    for info in (url("get", "/metrics"), url("get", "/apis-x"), url("post", "/version"),
                 url("get", "/versions")):
        assert not authorize(policy, anyone, info).allowed, info
    # everyone may ask what they may do, and nothing else
    review = res("create", "selfsubjectaccessreviews", group="authorization.k8s.io")
    assert authorize(policy, anyone, review).allowed
    assert not authorize(policy, anyone, res("list", "selfsubjectaccessreviews",
                                             group="authorization.k8s.io")).allowed
    assert not authorize(policy, User("bob"), url("get", "/api")).allowed  # not authenticated
    admin = User("root", ("system:masters",))
    assert authorize(policy, admin, res("delete", "anything", "ns", "x", group="x.io")).allowed
    assert authorize(policy, admin, url("put", "/whatever")).allowed


def test_missing_roles_are_the_reason_of_a_refusal():
    policy = ObjectPolicy([binding("a", "gone", [SA_SUBJECT], role_kind="ClusterRole"),
                           binding("b", "missing", [SA_SUBJECT], "ns")])
    d = authorize(policy, NODE, res("list", "pods", "ns"))
    assert not d.allowed
    assert d.reason == (f'RBAC: [clusterrole.{G} "gone" not found, role.{G} "missing" not found]')
    assert authorize(ObjectPolicy([]), NODE, res("list", "pods", "ns")) == rbac.Decision(False, "")


# --------------------------------------------------------------------------- the 403's words
@pytest.mark.parametrize("info, message, details", [
    (res("list", "jobs", "v6-jobs", group="batch"),
     'jobs.batch is forbidden: User "system:serviceaccount:v6-node:v6-node" cannot list resource '
     '"jobs" in API group "batch" in the namespace "v6-jobs"', {"kind": "jobs", "group": "batch"}),
    (res("get", "pods", "v6-jobs", "p", subresource="log"),
     'pods "p" is forbidden: User "system:serviceaccount:v6-node:v6-node" cannot get resource '
     '"pods/log" in API group "" in the namespace "v6-jobs"', {"kind": "pods", "name": "p"}),
    (res("list", "nodes"),
     'nodes is forbidden: User "system:serviceaccount:v6-node:v6-node" cannot list resource '
     '"nodes" in API group "" at the cluster scope', {"kind": "nodes"}),
    (url("get", "/foo"),
     'forbidden: User "system:serviceaccount:v6-node:v6-node" cannot get path "/foo"', {}),
])
def test_forbidden_messages_are_the_real_server_s(info, message, details):
    assert rbac.forbidden_message(NODE, info) == message
    assert rbac.forbidden_details(info) == details
    assert rbac.forbidden_message(NODE, info, "RBAC: x") == message + ": RBAC: x"


# --------------------------------------------------------------------------- objects in the store
def test_store_defaults_and_validates_rbac_objects():
    store = Store(namespaces=("v6-node", "v6-jobs", "ns"))
    for obj in repo_rbac():
        kind = obj["kind"]
        if kind in ("Role", "RoleBinding"):
            store.create(ROLES if kind == "Role" else ROLEBINDINGS, obj["metadata"]["namespace"], obj)
    rb = store.create(ROLEBINDINGS, "ns", {
        "metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "system:discovery"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "sa"}]})
    assert rb["roleRef"]["apiGroup"] == G
    assert rb["subjects"] == [{"kind": "User", "name": "alice", "apiGroup": G},
                              {"kind": "ServiceAccount", "name": "sa"}]
    rbac_bootstrap.seed(store)  # names with colons are valid RBAC names
    assert store.get(CLUSTERROLES, None, "system:discovery")["rules"][0]["verbs"] == ["get"]

    def causes(res_, ns, obj):
        with pytest.raises(ApiError) as e:
            store.create(res_, ns, obj)
        assert e.value.code == 422
        return {c["field"]: c["message"] for c in e.value.details["causes"]}

    assert causes(ROLES, "ns", {"metadata": {"name": "r"}, "rules": [
        {"nonResourceURLs": ["/x"], "verbs": ["get"]}, {"apiGroups": [""], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": []}]}) == {
        "rules[0].nonResourceURLs": 'Invalid value: []string{"/x"}: namespaced rules cannot '
                                    "apply to non-resource URLs",
        "rules[1].resources": "Required value: resource rules must supply at least one resource",
        "rules[2].verbs": "Required value: verbs must contain at least one value"}
    assert causes(CLUSTERROLES, None, {"metadata": {"name": "c"}, "rules": [
        {"nonResourceURLs": ["/x"], "resources": ["pods"], "verbs": ["get"]}]}) == {
        "rules[0].nonResourceURLs": 'Invalid value: []string{"/x"}: rules cannot apply to both '
                                    "regular resources and non-resource URLs"}
    assert causes(CLUSTERROLEBINDINGS, None, {
        "metadata": {"name": "c"}, "roleRef": {"apiGroup": G, "kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "sa"}, {"kind": "Robot", "name": "x"}]}) == {
        "roleRef.kind": 'Unsupported value: "Role": supported values: "ClusterRole"',
        "subjects[0].namespace": "Required value",
        "subjects[1].kind": 'Unsupported value: "Robot": supported values: "ServiceAccount", '
                            '"User", "Group"'}
    with pytest.raises(ApiError) as e:
        store.patch(ROLEBINDINGS, "ns", "b", {"roleRef": {"name": "system:basic-user"}},
                    "merge")
    assert e.value.code == 422 and "cannot change roleRef" in e.value.message


# --------------------------------------------------------------------------- escalation
def test_only_held_permissions_can_be_granted():
    from localcluster.apiserver.rbac_escalation import compact, missing
    owner = [{"apiGroups": [""], "resources": ["pods", "*/log"], "verbs": ["get", "list"]},
             {"apiGroups": ["batch"], "resources": ["jobs"], "resourceNames": ["j"], "verbs": ["*"]},
             {"nonResourceURLs": ["/api/*"], "verbs": ["get"]}]
    assert missing(owner, [{"apiGroups": [""], "resources": ["pods", "pods/log"],
                            "verbs": ["list"]}]) == []
    assert missing(owner, [{"apiGroups": ["batch"], "resources": ["jobs"], "resourceNames": ["j"],
                            "verbs": ["delete", "patch"]}]) == []
    assert missing(owner, [{"nonResourceURLs": ["/api/v1"], "verbs": ["get"]}]) == []
    lacking = missing(owner, [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]},       # "*" only from "*"
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]},  # all names: not held
        {"nonResourceURLs": ["/apis"], "verbs": ["get"]}])
    assert [compact(r) for r in lacking] == [
        '{APIGroups:[""], Resources:["pods"], Verbs:["*"]}',
        '{APIGroups:["batch"], Resources:["jobs"], Verbs:["get"]}',
        '{NonResourceURLs:["/apis"], Verbs:["get"]}']
