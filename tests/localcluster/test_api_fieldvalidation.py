"""fieldValidation over HTTP, as a real API server: Warn by default (unknown fields dropped, a
``Warning: 299`` header each), Strict refuses, Ignore drops silently; the official client's own
e2e manifests (with unknown metadata fields) go in; OpenAPI v3 served with its caching rules."""
from __future__ import annotations

import json

import pytest
import requests

pytestmark = pytest.mark.integration

JOB = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
       "spec": {"template": {"spec": {"restartPolicy": "Never",
                                      "containers": [{"name": "c", "image": "busybox"}]}}}}


@pytest.fixture
def http(cluster):
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {cluster.token}"

    def call(method, path, body=None, *, raw=None, ctype="application/json", headers=None,
             **params):
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        return s.request(method, cluster.server + path, params=params, data=data,
                         headers={"Content-Type": ctype, **(headers or {})},
                         verify=cluster.verify, timeout=10)  # per request: see CONTRACTS §7
    yield call
    s.close()


def warnings(r) -> list[str]:
    """The Warning headers of a response, one per problem (requests joins repeated headers)."""
    return list(r.raw.headers.getlist("Warning"))


def with_unknown(body, **extra):
    out = json.loads(json.dumps(body))
    out["spec"].update(extra)
    return out


def jobs(ns):
    return f"/apis/batch/v1/namespaces/{ns}/jobs"


def test_by_default_unknown_fields_are_dropped_with_one_warning_each(http, namespace):
    r = http("POST", jobs(namespace), with_unknown(JOB, bogus=1, backofLimit=2))
    assert r.status_code == 201, r.text
    assert warnings(r) == ['299 - "unknown field \\"spec.bogus\\""',
                           '299 - "unknown field \\"spec.backofLimit\\""']
    stored = http("GET", jobs(namespace) + "/j").json()
    assert "bogus" not in stored["spec"] and "backofLimit" not in stored["spec"]
    assert stored["spec"]["backoffLimit"] == 6  # the default: the typo set nothing


def test_a_clean_body_gets_no_warning(http, namespace):
    r = http("POST", jobs(namespace), JOB)
    assert r.status_code == 201 and warnings(r) == []


def test_strict_refuses_unknown_fields_and_stores_nothing(http, namespace):
    r = http("POST", jobs(namespace), with_unknown(JOB, bogus=1), fieldValidation="Strict")
    assert r.status_code == 400
    status = r.json()
    assert (status["kind"], status["reason"]) == ("Status", "BadRequest")
    assert status["message"] == ('Job in version "v1" cannot be handled as a Job: strict '
                                 'decoding error: unknown field "spec.bogus"')
    assert http("GET", jobs(namespace) + "/j").status_code == 404


def test_ignore_drops_unknown_fields_silently(http, namespace):
    r = http("POST", jobs(namespace), with_unknown(JOB, bogus=1), fieldValidation="Ignore")
    assert r.status_code == 201 and warnings(r) == []
    assert "bogus" not in r.json()["spec"]


@pytest.mark.parametrize("mode", ["Ignore", "Warn", "Strict"])
def test_other_schema_violations_stay_errors_in_every_mode(http, namespace, mode):
    r = http("POST", jobs(namespace), with_unknown(JOB, backoffLimit="many"),
             fieldValidation=mode)
    assert r.status_code == 422 and r.json()["reason"] == "Invalid"
    assert [c["field"] for c in r.json()["details"]["causes"]] == ["spec.backoffLimit"]


def test_a_refused_body_still_carries_the_warnings(http, namespace):
    r = http("POST", jobs(namespace), with_unknown(JOB, backoffLimit="many", bogus=1))
    assert r.status_code == 422 and r.json()["reason"] == "Invalid"
    assert warnings(r) == ['299 - "unknown field \\"spec.bogus\\""']


def test_an_unknown_field_validation_value_is_refused(http, namespace):
    r = http("POST", jobs(namespace), JOB, fieldValidation="strict")
    assert r.status_code == 422
    assert r.json()["message"].startswith('CreateOptions.meta.k8s.io "" is invalid: '
                                          'fieldValidation: Unsupported value: "strict"')
    assert http("GET", jobs(namespace) + "/j").status_code == 404


def test_duplicate_fields(http, namespace):
    raw = ('{"metadata": {"name": "a", "name": "b"}, "data": {"k": "1"}}')
    r = http("POST", f"/api/v1/namespaces/{namespace}/configmaps", raw=raw,
             fieldValidation="Strict")
    assert r.status_code == 400 and r.json()["message"] == (
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: '
        'duplicate field "metadata.name"')
    r = http("POST", f"/api/v1/namespaces/{namespace}/configmaps", raw=raw)
    assert r.status_code == 201 and r.json()["metadata"]["name"] == "b"  # the last one wins
    assert warnings(r) == ['299 - "duplicate field \\"metadata.name\\""']


def test_update_follows_the_same_rules(http, namespace):
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    http("POST", path, {"metadata": {"name": "a"}, "data": {"k": "1"}})
    body = {"metadata": {"name": "a"}, "data": {"k": "2"}, "bogus": True}
    r = http("PUT", path + "/a", body, fieldValidation="Strict")
    assert r.status_code == 400 and 'unknown field "bogus"' in r.json()["message"]
    r = http("PUT", path + "/a", body)
    assert r.status_code == 200 and warnings(r) == ['299 - "unknown field \\"bogus\\""']
    assert r.json()["data"] == {"k": "2"} and "bogus" not in r.json()
    r = http("PUT", path + "/a", body, fieldValidation="nope")
    assert r.status_code == 422 and r.json()["message"].startswith("UpdateOptions.meta.k8s.io")


@pytest.mark.parametrize("ctype, patch", [
    ("application/merge-patch+json", {"spec": {"bogus": 1}}),
    ("application/strategic-merge-patch+json", {"spec": {"bogus": 1}}),
    ("application/json-patch+json", [{"op": "add", "path": "/spec/bogus", "value": 1}]),
])
def test_patches_drop_or_refuse_unknown_fields_of_the_patched_object(http, namespace, ctype,
                                                                     patch):
    http("POST", jobs(namespace), JOB)
    r = http("PATCH", jobs(namespace) + "/j", patch, ctype=ctype, fieldValidation="Strict")
    assert r.status_code == 422 and r.json()["reason"] == "Invalid"
    message = r.json()["message"]
    assert message.startswith(' "" is invalid: patch: Invalid value: ')
    assert message.endswith(': strict decoding error: unknown field "spec.bogus"')
    if ctype.startswith("application/strategic"):
        assert 'Invalid value: "map[spec:map[bogus:1]]"' in message  # the patch, as Go prints it
    else:
        assert '\\"bogus\\":1' in message  # the patched object
    assert r.json()["details"]["causes"][0]["field"] == "patch"
    r = http("PATCH", jobs(namespace) + "/j", patch, ctype=ctype)
    assert r.status_code == 200 and warnings(r) == ['299 - "unknown field \\"spec.bogus\\""']
    assert "bogus" not in http("GET", jobs(namespace) + "/j").json()["spec"]
    r = http("PATCH", jobs(namespace) + "/j", patch, ctype=ctype, fieldValidation="Ignore")
    assert r.status_code == 200 and warnings(r) == []
    r = http("PATCH", jobs(namespace) + "/j", patch, ctype=ctype, fieldValidation="x")
    assert r.status_code == 422 and r.json()["message"].startswith("PatchOptions.meta.k8s.io")


def test_duplicates_in_a_patch_body_are_warned_about(http, namespace):
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    http("POST", path, {"metadata": {"name": "a"}})
    r = http("PATCH", path + "/a", raw='{"data": {"k": "1", "k": "2"}}',
             ctype="application/merge-patch+json")
    assert r.status_code == 200 and r.json()["data"] == {"k": "2"}
    assert warnings(r) == ['299 - "duplicate field \\"data.k\\""']


def test_the_official_clients_e2e_service_with_an_unknown_field(api, cluster, http, namespace):
    """kubernetes-client/python e2e_test/test_client.py test_service_apis: its manifest has a
    `metadata.resourceversion` (sic) a real server drops with a warning."""
    core = api[0]
    name = "frontend"
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"labels": {"name": name}, "name": name, "resourceversion": "v1"},
               "spec": {"ports": [{"name": "port", "port": 80, "protocol": "TCP",
                                   "targetPort": 80}],
                        "selector": {"name": name}}}
    resp = core.create_namespaced_service(body=service, namespace=namespace)
    assert resp.metadata.name == name and resp.status
    resp = core.read_namespaced_service(name=name, namespace=namespace)
    assert resp.metadata.name == name and resp.status
    service["spec"]["ports"] = [{"name": "new", "port": 8080, "protocol": "TCP",
                                 "targetPort": 8080}]
    resp = core.patch_namespaced_service(body=service, name=name, namespace=namespace)
    assert len(resp.spec.ports) == 2 and resp.status  # strategic merge by port
    stored = http("GET", f"/api/v1/namespaces/{namespace}/services/{name}").json()
    assert "resourceversion" not in stored["metadata"]
    core.delete_namespaced_service(name=name, body={}, namespace=namespace)


def test_the_official_clients_e2e_pod_with_an_unknown_field(api, namespace):
    """e2e_test test_pod_apis: `metadata.color` is not a field of ObjectMeta."""
    core = api[0]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"color": "blue", "name": "test"},
           "spec": {"containers": [{"image": "dockerfile/redis", "name": "redis"}]}}
    resp = core.create_namespaced_pod(body=pod, namespace=namespace)
    assert resp.metadata.name == "test" and resp.status.phase
    core.delete_namespaced_pod(name="test", namespace=namespace, body={})


def test_the_official_client_sends_strict_when_asked(api, namespace):
    from kubernetes.client import ApiException
    core = api[0]
    body = {"metadata": {"name": "a", "labls": {}}, "data": {}}
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(namespace, body, field_validation="Strict")
    assert e.value.status == 400
    assert json.loads(e.value.body)["message"].endswith(
        'strict decoding error: unknown field "metadata.labls"')
    assert core.create_namespaced_config_map(namespace, body).metadata.name == "a"


# --------------------------------------------------------------------------- OpenAPI v3
def test_openapi_v3_index_and_documents(http):
    r = http("GET", "/openapi/v3")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert {"api/v1", "apis/batch/v1", "apis/apps/v1"} <= set(paths)
    url = paths["api/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/api/v1?hash=")
    r = http("GET", url)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.headers["Cache-Control"] == "public, immutable"
    digest = url.rsplit("=", 1)[1]
    assert r.headers["ETag"] == f'"{digest}"'
    doc = r.json()
    assert doc["openapi"] == "3.0.0"
    pod = doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"]
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod",
                                                       "version": "v1"}]
    patch = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]


def test_openapi_v3_caching(http):
    url = http("GET", "/openapi/v3").json()["paths"]["apis/batch/v1"]["serverRelativeURL"]
    path, digest = url.split("?hash=")
    r = http("GET", path)  # no hash: may not be cached for good
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-cache, private"
    r = http("GET", path, hash="0BSOLETE")  # an old hash: sent on to the current document
    assert r.status_code == 200 and r.history and r.history[0].status_code == 301
    assert r.url.endswith(url)
    r = http("GET", url, headers={"If-None-Match": f'"{digest}"'})
    assert r.status_code == 304 and not r.content


def test_an_unknown_openapi_document_is_404(http):
    assert http("GET", "/openapi/v3/apis/example.com/v1").status_code == 404
