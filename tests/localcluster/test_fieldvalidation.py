"""Field validation and OpenAPI documents, the pure parts: which fields are unknown or duplicate
and how they are worded (as sigs.k8s.io/json words them), the fieldValidation parameter, the
Warning header, and OpenAPI v3 documents whose every reference resolves."""
from __future__ import annotations

import json

import pytest

from localcluster.apiserver import fieldvalidation as fv
from localcluster.apiserver import discovery, openapi
from localcluster.apiserver.errors import ApiError


def pod(**spec):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "x"}], **spec}}


def check_pod(obj):
    return fv.check(obj, "", "v1", "Pod")


def test_a_known_object_has_no_problems_and_is_kept_as_it_is():
    obj = pod(volumes=[{"name": "v", "emptyDir": {}}])
    obj["metadata"].update(labels={"any/key": "v"}, annotations={"x.io/y": "z"})
    pruned, problems = check_pod(obj)
    assert problems == [] and pruned == obj


def test_unknown_fields_are_dropped_and_named_by_their_path_in_document_order():
    obj = pod(bogus=1)
    obj["metadata"]["resourceversion"] = "v1"  # the case matters, as in the real decoder
    obj["spec"]["containers"].append({"name": "d", "image": "y", "imagePullPolcy": "Never",
                                      "ports": [{"containerPort": 1, "hostPrt": 2}]})
    pruned, problems = check_pod(obj)
    assert problems == ['unknown field "metadata.resourceversion"',
                        'unknown field "spec.containers[1].imagePullPolcy"',
                        'unknown field "spec.containers[1].ports[0].hostPrt"',
                        'unknown field "spec.bogus"']  # after containers in the body
    assert "resourceversion" not in pruned["metadata"] and "bogus" not in pruned["spec"]
    assert pruned["spec"]["containers"][1] == {"name": "d", "image": "y",
                                               "ports": [{"containerPort": 1}]}
    assert obj["spec"]["bogus"] == 1  # the input is not changed


def test_maps_take_any_key_but_their_values_are_typed():
    obj = {"metadata": {"name": "a", "labels": {"weird key": "v"}},
           "data": {"anything": "x"}}
    assert fv.check(obj, "", "v1", "ConfigMap") == (obj, [])
    job = {"spec": {"template": {"metadata": {"labels": {"a": "b"}, "labls": {}},
                                 "spec": {"containers": []}}}}
    _, problems = fv.check(job, "batch", "v1", "Job")
    assert problems == ['unknown field "spec.template.metadata.labls"']


def test_an_unserved_kind_has_no_schema_to_find_unknown_fields_in():
    assert fv.check({"foo": 1}, "example.com", "v1", "Widget") == ({"foo": 1}, [])


def test_duplicate_fields_are_found_while_parsing_and_the_last_value_wins():
    body = fv.loads(b'{"metadata": {"name": "a", "name": "b", "labels": {"k": "1", "k": "2"}},'
                    b' "spec": {"bogus": 1, "bogus": 2, "containers": []}}')
    pruned, problems = check_pod(body)
    assert pruned["metadata"] == {"name": "b", "labels": {"k": "2"}}
    # a repeated unknown field is one unknown field (the real decoder checks known fields only)
    assert problems == ['duplicate field "metadata.name"', 'duplicate field "metadata.labels.k"',
                        'unknown field "spec.bogus"']
    assert type(pruned["metadata"]) is dict  # plain dicts go on to the store


def test_duplicates_alone_for_patch_bodies():
    plain, problems = fv.duplicates(fv.loads(b'[{"op": "add", "op": "replace", "path": "/a"}]'),
                                    "json patch ")
    assert plain == [{"op": "replace", "path": "/a"}]
    assert problems == ['json patch duplicate field "[0].op"']


def test_bad_json_is_a_400():
    with pytest.raises(ApiError) as e:
        fv.loads(b"{nope")
    assert e.value.code == 400


@pytest.mark.parametrize("value, expected", [(None, "Warn"), ("", "Warn"), ("Strict", "Strict"),
                                             ("Warn", "Warn"), ("Ignore", "Ignore")])
def test_directive(value, expected):
    assert fv.directive(value, "POST") == expected


@pytest.mark.parametrize("method, kind", [("POST", "CreateOptions"), ("PUT", "UpdateOptions"),
                                          ("PATCH", "PatchOptions")])
def test_an_unknown_directive_is_refused_as_the_real_options_validation_refuses_it(method, kind):
    with pytest.raises(ApiError) as e:
        fv.directive("strict", method)  # the values are case-sensitive
    assert (e.value.code, e.value.reason) == (422, "Invalid")
    assert e.value.message == (f'{kind}.meta.k8s.io "" is invalid: fieldValidation: Unsupported '
                               'value: "strict": supported values: "", "Ignore", "Strict", "Warn"')
    assert e.value.details["causes"][0]["field"] == "fieldValidation"


def test_errors_are_worded_as_the_real_server_words_them():
    problems = ['unknown field "spec.a"', 'duplicate field "spec.b"']
    e = fv.decode_error("Job", "v1", problems)
    assert (e.code, e.reason) == (400, "BadRequest")
    assert e.message == ('Job in version "v1" cannot be handled as a Job: strict decoding error: '
                         'unknown field "spec.a", duplicate field "spec.b"')
    e = fv.patch_error('{"x":"é"}', problems[:1])
    assert (e.code, e.reason) == (422, "Invalid")
    assert e.message == (' "" is invalid: patch: Invalid value: "{\\"x\\":\\"é\\"}": strict '
                         'decoding error: unknown field "spec.a"')


def test_warning_header_quotes_the_text():
    assert fv.warning_header('unknown field "spec.foo"') == '299 - "unknown field \\"spec.foo\\""'
    assert fv.warning_header("a\\b") == '299 - "a\\\\b"'


def test_go_format_prints_a_patch_as_go_prints_a_map():
    assert fv.go_format({"spec": {"b": [1, "x"], "a": None, "c": True}}) == \
        "map[spec:map[a:<nil> b:[1 x] c:true]]"


# --------------------------------------------------------------------------- OpenAPI documents
def _refs(node, out):
    if isinstance(node, dict):
        if "$ref" in node:
            out.add(node["$ref"])
        for v in node.values():
            _refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _refs(v, out)
    return out


@pytest.mark.parametrize("api_version", ["v1", "batch/v1", "apps/v1", "networking.k8s.io/v1",
                                         "rbac.authorization.k8s.io/v1"])
def test_every_reference_of_a_document_resolves_and_schemas_are_openapi_3_0(api_version):
    doc = openapi.document(api_version)
    schemas = doc["components"]["schemas"]
    refs = _refs(doc, set())
    assert refs and all(r.startswith("#/components/schemas/") for r in refs)
    assert {r.rsplit("/", 1)[1] for r in refs} <= set(schemas)
    text = json.dumps(doc)
    assert '"null"' not in text and '"$defs' not in text  # no JSON-schema leftovers
    assert '"additionalProperties": false' not in text


def test_kinds_carry_their_group_version_kind_and_patch_operations_their_parameters():
    doc = openapi.document("batch/v1")
    job = doc["components"]["schemas"]["io.k8s.api.batch.v1.Job"]
    assert job["x-kubernetes-group-version-kind"] == [{"group": "batch", "kind": "Job",
                                                       "version": "v1"}]
    assert job["properties"]["spec"] == {
        "allOf": [{"$ref": "#/components/schemas/io.k8s.api.batch.v1.JobSpec"}],
        "description": job["properties"]["spec"]["description"]}
    assert job["properties"]["apiVersion"]["type"] == "string"
    op = doc["paths"]["/apis/batch/v1/namespaces/{namespace}/jobs/{name}"]["patch"]
    assert op["x-kubernetes-group-version-kind"] == {"group": "batch", "kind": "Job",
                                                     "version": "v1"}
    assert "fieldValidation" in [p["name"] for p in op["parameters"]]
    assert "application/strategic-merge-patch+json" in op["requestBody"]["content"]
    assert "application/apply-patch+yaml" not in op["requestBody"]["content"]  # not served


def test_strategic_merge_keys_and_int_or_string_are_spelled_as_in_real_documents():
    schemas = openapi.document("v1")["components"]["schemas"]
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert containers["items"] == {"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}
    assert schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] == {
        "type": "string", "format": "int-or-string"}


def test_the_index_lists_every_served_group_version_with_the_hash_of_its_document():
    index = openapi.index()["paths"]
    # every group-version that discovery (/apis) announces, and the core one
    served = {f"apis/{v['groupVersion']}" for g in discovery.group_list()["groups"]
              for v in g["versions"]}
    assert "apis/batch/v1" in served
    assert set(index) == served | {"api/v1"}
    data, digest = openapi.serialized("apis/batch/v1")
    assert index["apis/batch/v1"]["serverRelativeURL"] == f"/openapi/v3/apis/batch/v1?hash={digest}"
    assert len(digest) == 128 and digest == digest.upper()
    assert json.loads(data) == openapi.document("batch/v1")
    assert openapi.serialized("apis/example.com/v1") is None
