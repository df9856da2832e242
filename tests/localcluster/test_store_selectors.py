"""Unit tests of label/field selectors and patches."""
from __future__ import annotations

import pytest

from localcluster.apiserver.errors import ApiError
from localcluster.apiserver.patch import apply_patch
from localcluster.apiserver.selectors import FieldSelector, LabelSelector


@pytest.mark.parametrize("selector, labels, expected", [
    ("a=b", {"a": "b"}, True),
    ("a==b", {"a": "c"}, False),
    ("a!=b", {}, True),
    ("a!=b", {"a": "b"}, False),
    ("a in (x, y)", {"a": "y"}, True),
    ("a in (x,y),b", {"a": "y"}, False),
    ("a notin (x)", {"a": "z"}, True),
    ("a notin (x)", {}, True),
    ("a", {"a": ""}, True),
    ("!a", {"a": "1"}, False),
    ("example.com/k=v,!gone", {"example.com/k": "v"}, True),
    ("", {"whatever": "1"}, True),
])
def test_label_selector(selector, labels, expected):
    assert LabelSelector.parse(selector).matches(labels) is expected


@pytest.mark.parametrize("bad", ["a=b=c", "a in x", "=b", "a in (x", "a b"])
def test_bad_label_selector_is_400(bad):
    with pytest.raises(ApiError) as e:
        LabelSelector.parse(bad)
    assert e.value.code == 400


def test_label_selector_from_object():
    sel = LabelSelector.from_dict({"matchLabels": {"a": "1"},
                                   "matchExpressions": [{"key": "b", "operator": "In",
                                                         "values": ["x"]}]})
    assert sel.matches({"a": "1", "b": "x"}) and not sel.matches({"a": "1"})


def test_field_selector():
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "n"}, "status": {"phase": "Running"}}
    assert FieldSelector.parse("status.phase=Running,spec.nodeName==n").matches(pod)
    assert not FieldSelector.parse("status.phase!=Running").matches(pod)
    assert FieldSelector.parse("spec.nodeName=").matches({"spec": {}})
    with pytest.raises(ApiError) as e:
        FieldSelector.parse("spec.image=x", allowed=["metadata.name"])
    assert e.value.code == 400 and "field label not supported" in e.value.message


def test_merge_patch_removes_nulls_and_replaces_lists():
    obj = {"a": {"b": 1, "c": 2}, "l": [1, 2], "containers": [{"name": "x", "image": "i"}]}
    assert apply_patch(obj, {"a": {"b": None}, "l": [3], "containers": [{"name": "y"}]},
                       "merge") == {"a": {"c": 2}, "l": [3], "containers": [{"name": "y"}]}
    assert obj["a"] == {"b": 1, "c": 2}  # the input is not modified


def test_strategic_merge_uses_merge_keys():
    obj = {"spec": {"containers": [{"name": "a", "image": "1", "env": [{"name": "X",
                                                                          "value": "1"}]},
                                   {"name": "b", "image": "1"}],
                    "tolerations": [{"key": "k"}]},
           "metadata": {"finalizers": ["f1"]},
           "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    out = apply_patch(obj, {
        "spec": {"containers": [{"name": "a", "image": "2", "env": [{"name": "Y", "value": "2"}]},
                                {"name": "b", "$patch": "delete"}],
                 "tolerations": [{"key": "other"}]},
        "metadata": {"finalizers": ["f2"]},
        "status": {"conditions": [{"type": "Ready", "status": "True"},
                                  {"type": "Done", "status": "True"}]}}, "strategic")
    assert out["spec"]["containers"] == [{"name": "a", "image": "2", "env": [
        {"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}]
    assert out["spec"]["tolerations"] == [{"key": "other"}]  # no merge key: replaced
    assert out["metadata"]["finalizers"] == ["f1", "f2"]
    assert [c["status"] for c in out["status"]["conditions"]] == ["True", "True"]
    removed = apply_patch(out, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"]}},
                          "strategic")
    assert removed["metadata"]["finalizers"] == ["f2"]


def test_json_patch_operations_and_failed_test():
    obj = {"a": [1, 2], "b": {"c": 1}}
    out = apply_patch(obj, [{"op": "add", "path": "/a/-", "value": 3},
                            {"op": "replace", "path": "/b/c", "value": 2},
                            {"op": "move", "from": "/b", "path": "/d"},
                            {"op": "copy", "from": "/a/0", "path": "/e"}], "json")
    assert out == {"a": [1, 2, 3], "d": {"c": 2}, "e": 1}
    with pytest.raises(ApiError) as e:
        apply_patch(obj, [{"op": "test", "path": "/a/0", "value": 9}], "json")
    assert e.value.code == 422
