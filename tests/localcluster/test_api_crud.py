"""The API server through the official kubernetes client: discovery, CRUD, selectors, errors,
validation."""
from __future__ import annotations

import json

import kubernetes
import pytest
from kubernetes.client import ApiException

pytestmark = pytest.mark.integration


def job_body(name, **meta):
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, **meta},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "c", "image": "busybox"}]}}}}


def pod_body(name, labels=None, **spec):
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def raw_request(client, method, path, body=None):
    """(HTTP status, decoded body) of a request made with the client's own transport and auth.

    Through `rest_client` rather than `call_api`, whose signature differs between client
    releases."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    client.update_params_for_auth(headers, [], ["BearerToken"])
    try:
        resp = client.rest_client.request(method, client.configuration.host + path,
                                          headers=headers, body=body, _preload_content=False)
    except kubernetes.client.exceptions.ApiException as e:  # older releases raise on non-2xx
        return e.status, json.loads(e.body)
    return resp.status, json.loads(resp.data)


def test_version_and_discovery(cluster):
    client = cluster.api_client()
    assert kubernetes.client.VersionApi(client).get_code().git_version == "v1.30.0"
    assert kubernetes.client.CoreApi(client).get_api_versions().versions == ["v1"]
    groups = {g.name for g in kubernetes.client.ApisApi(client).get_api_versions().groups}
    assert {"batch", "networking.k8s.io"} <= groups
    core = {r.name: r for r in kubernetes.client.CoreV1Api(client).get_api_resources().resources}
    assert core["pods"].namespaced and core["pods"].kind == "Pod" and "watch" in core["pods"].verbs
    assert not core["namespaces"].namespaced and "pods/log" in core
    batch = kubernetes.client.BatchV1Api(client).get_api_resources()
    assert {r.name for r in batch.resources} >= {"jobs", "jobs/status"}
    net = kubernetes.client.NetworkingV1Api(client).get_api_resources()
    assert "networkpolicies" in {r.name for r in net.resources}


def test_unauthenticated_is_401(cluster):
    import requests
    r = requests.get(cluster.server + "/api/v1/namespaces", verify=cluster.verify, timeout=5)
    assert r.status_code == 401 and r.json()["reason"] == "Unauthorized"
    r = requests.get(cluster.server + "/localcluster/metrics",
                     headers={"Authorization": "Bearer wrong"}, verify=cluster.verify,
                     timeout=5)
    assert r.status_code == 401


def test_default_namespaces_exist(api):
    core, _, _ = api
    names = {n.metadata.name for n in core.list_namespace().items}
    assert {"default", "kube-system"} <= names
    assert core.read_namespace("default").status.phase == "Active"


@pytest.mark.parametrize("kind", ["configmap", "secret", "service", "serviceaccount", "event",
                                  "pod"])
def test_core_crud(api, namespace, kind):
    core, _, _ = api
    bodies = {
        "configmap": {"metadata": {"name": "x", "labels": {"app": "t"}}, "data": {"k": "v"}},
        "secret": {"metadata": {"name": "x", "labels": {"app": "t"}},
                   "stringData": {"k": "v"}},
        "service": {"metadata": {"name": "x", "labels": {"app": "t"}},
                    "spec": {"selector": {"app": "t"}, "ports": [{"port": 80}]}},
        "serviceaccount": {"metadata": {"name": "x", "labels": {"app": "t"}}},
        "event": {"metadata": {"name": "x", "labels": {"app": "t"}},
                  "involvedObject": {"kind": "Pod", "name": "p", "namespace": namespace},
                  "reason": "Test", "message": "hello", "type": "Normal"},
        "pod": pod_body("x", {"app": "t"}),
    }
    create = getattr(core, f"create_namespaced_{kind.replace('serviceaccount', 'service_account').replace('configmap', 'config_map')}")
    suffix = create.__name__.removeprefix("create_namespaced_")
    read = getattr(core, f"read_namespaced_{suffix}")
    lst = getattr(core, f"list_namespaced_{suffix}")
    patch = getattr(core, f"patch_namespaced_{suffix}")
    replace = getattr(core, f"replace_namespaced_{suffix}")
    delete = getattr(core, f"delete_namespaced_{suffix}")

    created = create(namespace, bodies[kind])
    assert created.metadata.uid and created.metadata.resource_version
    assert created.metadata.creation_timestamp is not None
    got = read("x", namespace)
    assert got.metadata.uid == created.metadata.uid
    assert [o.metadata.name for o in lst(namespace, label_selector="app=t").items] == ["x"]
    assert lst(namespace, label_selector="app=other").items == []
    patched = patch("x", namespace, {"metadata": {"labels": {"extra": "1"}}})
    assert patched.metadata.labels == {"app": "t", "extra": "1"}
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
    patched.metadata.annotations = {"note": "replaced"}
    replaced = replace("x", namespace, patched)
    assert replaced.metadata.annotations == {"note": "replaced"}
    delete("x", namespace, grace_period_seconds=0)
    with pytest.raises(ApiException) as e:
        read("x", namespace)
    assert e.value.status == 404


def test_list_is_a_typed_list_with_resource_version(cluster, namespace):
    import requests
    r = requests.get(f"{cluster.server}/api/v1/namespaces/{namespace}/pods",
                     headers={"Authorization": f"Bearer {cluster.token}"},
                     verify=cluster.verify, timeout=5)
    body = r.json()
    assert body["kind"] == "PodList" and body["apiVersion"] == "v1"
    assert body["metadata"]["resourceVersion"].isdigit() and body["items"] == []


def test_job_crud_and_defaults(api, namespace):
    _, batch, _ = api
    job = batch.create_namespaced_job(namespace, job_body("j"))
    assert job.spec.backoff_limit == 6 and job.spec.completions == 1
    assert job.spec.template.metadata.labels["job-name"] == "j"
    assert job.spec.selector.match_labels == {
        "batch.kubernetes.io/controller-uid": job.metadata.uid}
    status = batch.patch_namespaced_job_status("j", namespace, {"status": {"active": 1}})
    assert status.status.active == 1
    assert batch.read_namespaced_job_status("j", namespace).status.active == 1
    listed = batch.list_job_for_all_namespaces(label_selector="job-name=j")
    assert listed.items == []  # the label is on the template, not on the Job
    jobs = batch.list_namespaced_job(namespace, field_selector="metadata.name=j").items
    assert [j.metadata.name for j in jobs] == ["j"]


def test_network_policy_crud(api, namespace):
    _, _, net = api
    body = {"metadata": {"name": "deny"},
            "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}}
    np = net.create_namespaced_network_policy(namespace, body)
    assert np.spec.policy_types == ["Ingress", "Egress"]
    assert [p.metadata.name for p in net.list_namespaced_network_policy(namespace).items] == ["deny"]
    net.delete_namespaced_network_policy("deny", namespace)
    assert net.list_namespaced_network_policy(namespace).items == []


def test_pod_defaults_and_field_selectors(api, namespace):
    core, _, _ = api
    p = core.create_namespaced_pod(namespace, pod_body("a"))
    assert p.status.phase == "Pending" and p.spec.restart_policy == "Always"
    assert p.spec.dns_policy == "ClusterFirst" and p.spec.termination_grace_period_seconds == 30
    core.create_namespaced_pod(namespace, pod_body("b", nodeName="local"))
    on_node = core.list_namespaced_pod(namespace, field_selector="spec.nodeName=local").items
    assert [x.metadata.name for x in on_node] == ["b"]
    pending = core.list_pod_for_all_namespaces(
        field_selector=f"status.phase=Pending,metadata.namespace={namespace}").items
    assert sorted(x.metadata.name for x in pending) == ["a", "b"]
    with pytest.raises(ApiException) as e:
        core.list_namespaced_pod(namespace, field_selector="spec.image=x")
    assert e.value.status == 400


def test_generate_name(api, namespace):
    core, _, _ = api
    cm = core.create_namespaced_config_map(namespace, {"metadata": {"generateName": "cfg-"}})
    assert cm.metadata.name.startswith("cfg-") and len(cm.metadata.name) == 9


def test_duplicate_create_is_409_already_exists(api, namespace):
    core, _, _ = api
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "a"}})
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "a"}})
    assert e.value.status == 409 and '"AlreadyExists"' in e.value.body


def test_stale_update_is_409_conflict(api, namespace):
    core, _, _ = api
    cm = core.create_namespaced_config_map(namespace, {"metadata": {"name": "a"}})
    core.patch_namespaced_config_map("a", namespace, {"data": {"k": "1"}})
    cm.data = {"k": "2"}
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("a", namespace, cm)
    assert e.value.status == 409 and '"Conflict"' in e.value.body


def test_missing_namespace_is_404(api):
    core, _, _ = api
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("does-not-exist", {"metadata": {"name": "a"}})
    assert e.value.status == 404 and "namespaces" in e.value.body


def test_json_patch(api, namespace):
    core, _, _ = api
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "a"}, "data": {"k": "1"}})
    out = core.patch_namespaced_config_map(
        "a", namespace, [{"op": "replace", "path": "/data/k", "value": "2"}])
    assert out.data == {"k": "2"}


# Unknown fields are not among these: by default (fieldValidation=Warn) they are dropped with a
# warning (tests/localcluster/test_api_fieldvalidation.py).
@pytest.mark.parametrize("mutate, field", [
    (lambda b: b["spec"].update(backoffLimit="many"), "spec.backoffLimit"),
    (lambda b: b["metadata"].update(name="Not_A_Name"), "metadata.name"),
    (lambda b: b["spec"]["template"]["spec"].update(restartPolicy="Always"),
     "spec.template.spec.restartPolicy"),
    (lambda b: b["spec"]["template"]["spec"]["containers"].append({"name": "c", "image": "x"}),
     "spec.template.spec.containers[1].name"),
])
def test_invalid_job_is_422_with_causes(api, namespace, mutate, field):
    _, batch, _ = api
    body = job_body("j")
    mutate(body)
    # This client version validates models itself; send the raw body through its ApiClient.
    code, status = raw_request(batch.api_client, "POST",
                               f"/apis/batch/v1/namespaces/{namespace}/jobs", body)
    assert code == 422 and status["reason"] == "Invalid"
    assert field in [c["field"] for c in status["details"]["causes"]]


def test_unknown_route_and_method(cluster):
    import requests
    h = {"Authorization": f"Bearer {cluster.token}"}
    r = requests.get(f"{cluster.server}/api/v1/widgets", headers=h, verify=cluster.verify,
                     timeout=5)
    assert r.status_code == 404 and r.json()["kind"] == "Status"
    r = requests.post(f"{cluster.server}/api/v1/namespaces/default/pods/x", headers=h,
                      json={}, verify=cluster.verify, timeout=5)
    assert r.status_code == 405 and r.json()["reason"] == "MethodNotAllowed"
    r = requests.post(f"{cluster.server}/api/v1/namespaces/default/configmaps", headers=h,
                      data="{not json", verify=cluster.verify, timeout=5)
    assert r.status_code == 400 and r.json()["reason"] == "BadRequest"


def test_secret_string_data_is_merged_into_data(api, namespace):
    import base64
    core, _, _ = api
    s = core.create_namespaced_secret(namespace, {"metadata": {"name": "s"},
                                                  "stringData": {"token": "abc"},
                                                  "data": {"other": "eA=="}})
    assert s.type == "Opaque" and s.string_data is None
    assert s.data == {"other": "eA==", "token": base64.b64encode(b"abc").decode()}


def test_later_types_deployments_and_rbac(cluster, namespace):
    client = cluster.api_client()
    apps = kubernetes.client.AppsV1Api(client)
    rbac = kubernetes.client.RbacAuthorizationV1Api(client)
    d = apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}},
                              "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    assert d.spec.replicas == 1
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "r"}, "rules": [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "watch"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "rb"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}]})
    assert [r.metadata.name for r in rbac.list_namespaced_role_binding(namespace).items] == ["rb"]
    assert rbac.read_namespaced_role("r", namespace).rules[0].verbs == ["create", "watch"]
