"""Unit tests of the in-memory store (no HTTP): CRUD, versions, watches, deletion semantics."""
from __future__ import annotations

import asyncio

import pytest

from localcluster.apiserver.errors import ApiError, Gone
from localcluster.apiserver.store import (CONFIGMAPS, JOBS, NAMESPACES, PODS, Store)


def pod(name, **spec):
    return {"metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def job(name):
    return {"metadata": {"name": name}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}


def owned_pod(name, owner, block=True):
    p = pod(name, nodeName="local")
    p["metadata"]["ownerReferences"] = [{
        "apiVersion": "batch/v1", "kind": "Job", "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": block}]
    return p


def drain(w):
    out = []
    while (ev := w.get_nowait()) is not None:
        out.append((ev[0], ev[1]["metadata"]["name"]))
    return out


@pytest.fixture
def store():
    return Store(history=50)


def test_create_assigns_metadata_and_defaults(store):
    p = store.create(PODS, "default", pod("a"))
    meta = p["metadata"]
    assert meta["uid"] and meta["generation"] == 1 and meta["creationTimestamp"].endswith("Z")
    assert int(meta["resourceVersion"]) > 0
    assert p["kind"] == "Pod" and p["apiVersion"] == "v1"
    assert p["status"]["phase"] == "Pending"
    assert p["spec"]["restartPolicy"] == "Always"
    assert p["spec"]["terminationGracePeriodSeconds"] == 30


def test_resource_versions_increase_and_are_strings(store):
    a = store.create(CONFIGMAPS, "default", {"metadata": {"name": "a"}})
    b = store.create(CONFIGMAPS, "default", {"metadata": {"name": "b"}})
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    assert store.list(CONFIGMAPS, "default")[1] == b["metadata"]["resourceVersion"]


def test_generate_name(store):
    p = store.create(PODS, "default", {"metadata": {"generateName": "x-"},
                                       "spec": pod("")["spec"]})
    assert p["metadata"]["name"].startswith("x-") and len(p["metadata"]["name"]) == 7


def test_duplicate_is_409_already_exists(store):
    store.create(PODS, "default", pod("a"))
    with pytest.raises(ApiError) as e:
        store.create(PODS, "default", pod("a"))
    assert (e.value.code, e.value.reason) == (409, "AlreadyExists")


def test_missing_namespace_is_404(store):
    with pytest.raises(ApiError) as e:
        store.create(PODS, "nope", pod("a"))
    assert e.value.code == 404 and "namespaces" in e.value.message


def test_job_defaults(store):
    j = store.create(JOBS, "default", job("j"))
    uid = j["metadata"]["uid"]
    spec = j["spec"]
    assert (spec["backoffLimit"], spec["completions"], spec["parallelism"]) == (6, 1, 1)
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert spec["template"]["metadata"]["labels"] == {
        "controller-uid": uid, "batch.kubernetes.io/controller-uid": uid,
        "job-name": "j", "batch.kubernetes.io/job-name": "j"}


def test_stale_update_is_409_conflict(store):
    a = store.create(CONFIGMAPS, "default", {"metadata": {"name": "a"}, "data": {"k": "1"}})
    a2 = dict(a, data={"k": "2"})
    store.replace(CONFIGMAPS, "default", "a", a2)
    with pytest.raises(ApiError) as e:
        store.replace(CONFIGMAPS, "default", "a", dict(a, data={"k": "3"}))
    assert (e.value.code, e.value.reason) == (409, "Conflict")


def test_spec_change_bumps_generation_status_change_does_not(store):
    j = store.create(JOBS, "default", job("j"))
    j = store.patch(JOBS, "default", "j", {"spec": {"suspend": True}}, "merge")
    assert j["metadata"]["generation"] == 2
    j = store.patch(JOBS, "default", "j", {"status": {"active": 1}}, "merge", "status")
    assert j["metadata"]["generation"] == 2 and j["status"] == {"active": 1}


def test_main_resource_update_ignores_status(store):
    store.create(JOBS, "default", job("j"))
    j = store.patch(JOBS, "default", "j", {"status": {"active": 3}}, "merge")
    assert j["status"] == {}


def test_noop_update_keeps_resource_version(store):
    a = store.create(CONFIGMAPS, "default", {"metadata": {"name": "a"}, "data": {"k": "1"}})
    b = store.patch(CONFIGMAPS, "default", "a", {"data": {"k": "1"}}, "merge")
    assert b["metadata"]["resourceVersion"] == a["metadata"]["resourceVersion"]


def test_json_patch(store):
    store.create(CONFIGMAPS, "default", {"metadata": {"name": "a"}, "data": {"k": "1"}})
    b = store.patch(CONFIGMAPS, "default", "a",
                    [{"op": "add", "path": "/data/x", "value": "2"},
                     {"op": "remove", "path": "/data/k"}], "json")
    assert b["data"] == {"x": "2"}


def test_mutate_changes_status_and_emits(store):
    store.create(PODS, "default", pod("a"))
    seen = []
    store.subscribe(lambda t, res, obj: seen.append((t, res.plural, obj["status"]["phase"])))
    store.mutate(PODS, "default", "a", lambda o: o["status"].update(phase="Running"))
    assert seen == [("MODIFIED", "pods", "Running")]


def test_list_selectors(store):
    store.create(PODS, "default", dict(pod("a"), metadata={"name": "a", "labels": {"x": "1"}}))
    store.create(PODS, "default", dict(pod("b"), metadata={"name": "b", "labels": {"x": "2"}}))
    names = lambda items: sorted(i["metadata"]["name"] for i in items)  # noqa: E731
    assert names(store.list(PODS, "default", "x=1")[0]) == ["a"]
    assert names(store.list(PODS, "default", "x in (1,2)")[0]) == ["a", "b"]
    assert names(store.list(PODS, None, None, "metadata.name!=a")[0]) == ["b"]
    with pytest.raises(ApiError) as e:
        store.list(PODS, "default", None, "spec.nothing=1")
    assert e.value.code == 400


def test_watch_from_resource_version_sees_later_events_only(store):
    a = store.create(CONFIGMAPS, "default", {"metadata": {"name": "a"}})
    store.create(CONFIGMAPS, "default", {"metadata": {"name": "b"}})
    w = store.watch(CONFIGMAPS, "default", a["metadata"]["resourceVersion"])
    store.delete(CONFIGMAPS, "default", "a")
    assert drain(w) == [("ADDED", "b"), ("DELETED", "a")]
    w.close()


def test_watch_without_version_replays_current_objects(store):
    store.create(CONFIGMAPS, "default", {"metadata": {"name": "a"}})
    w = store.watch(CONFIGMAPS, None, None)
    assert drain(w) == [("ADDED", "a")]


def test_watch_selector_transitions(store):
    store.create(CONFIGMAPS, "default", {"metadata": {"name": "a", "labels": {"x": "1"}}})
    w = store.watch(CONFIGMAPS, "default", store.resource_version, "x=1")
    store.patch(CONFIGMAPS, "default", "a", {"metadata": {"labels": {"x": "2"}}}, "merge")
    store.patch(CONFIGMAPS, "default", "a", {"metadata": {"labels": {"x": "1"}}}, "merge")
    assert drain(w) == [("DELETED", "a"), ("ADDED", "a")]


def test_watch_too_old_is_gone(store):
    first = store.create(CONFIGMAPS, "default", {"metadata": {"name": "a"}})
    for i in range(60):
        store.patch(CONFIGMAPS, "default", "a", {"data": {"i": str(i)}}, "merge")
    with pytest.raises(Gone) as e:
        store.watch(CONFIGMAPS, "default", first["metadata"]["resourceVersion"])
    assert e.value.code == 410 and "too old resource version" in e.value.message


def test_async_watch_iteration_and_close(store):
    async def main():
        w = store.watch(CONFIGMAPS, "default", store.resource_version)
        store.create(CONFIGMAPS, "default", {"metadata": {"name": "a"}})
        got = []
        async for t, obj in w:
            got.append((t, obj["metadata"]["name"]))
            store.close()
        return got
    assert asyncio.run(main()) == [("ADDED", "a")]


def test_background_deletion_collects_dependents(store):
    j = store.create(JOBS, "default", job("j"))
    store.create(PODS, "default", owned_pod("p", j))
    store.delete(JOBS, "default", "j", propagation="Background")
    assert store.try_get(JOBS, "default", "j") is None
    p = store.get(PODS, "default", "p")  # scheduled pod: graceful deletion started
    assert p["metadata"]["deletionTimestamp"]
    store.delete(PODS, "default", "p", grace_period_seconds=0)
    assert store.try_get(PODS, "default", "p") is None


def test_foreground_deletion_waits_for_blocking_dependents(store):
    j = store.create(JOBS, "default", job("j"))
    store.create(PODS, "default", owned_pod("p", j))
    store.delete(JOBS, "default", "j", propagation="Foreground")
    j = store.get(JOBS, "default", "j")
    assert j["metadata"]["deletionTimestamp"] and "foregroundDeletion" in j["metadata"]["finalizers"]
    store.delete(PODS, "default", "p", grace_period_seconds=0)  # the kubelet confirms
    assert store.try_get(JOBS, "default", "j") is None


def test_orphan_deletion_keeps_dependents_without_reference(store):
    j = store.create(JOBS, "default", job("j"))
    store.create(PODS, "default", owned_pod("p", j))
    store.delete(JOBS, "default", "j")  # Jobs default to Orphan
    assert store.try_get(JOBS, "default", "j") is None
    p = store.get(PODS, "default", "p")
    assert "ownerReferences" not in p["metadata"] and "deletionTimestamp" not in p["metadata"]


def test_unscheduled_pod_is_removed_at_once(store):
    store.create(PODS, "default", pod("a"))
    store.delete(PODS, "default", "a")
    assert store.try_get(PODS, "default", "a") is None


def test_finalizers_hold_the_object(store):
    store.create(CONFIGMAPS, "default", {"metadata": {"name": "a", "finalizers": ["x/y"]}})
    w = store.watch(CONFIGMAPS, "default", store.resource_version)
    store.delete(CONFIGMAPS, "default", "a")
    assert store.get(CONFIGMAPS, "default", "a")["metadata"]["deletionTimestamp"]
    store.patch(CONFIGMAPS, "default", "a", {"metadata": {"finalizers": None}}, "merge")
    assert store.try_get(CONFIGMAPS, "default", "a") is None
    assert drain(w) == [("MODIFIED", "a"), ("DELETED", "a")]


def test_delete_preconditions(store):
    store.create(CONFIGMAPS, "default", {"metadata": {"name": "a"}})
    with pytest.raises(ApiError) as e:
        store.delete(CONFIGMAPS, "default", "a", preconditions={"uid": "other"})
    assert e.value.code == 409


def test_namespace_deletion_removes_contents(store):
    store.create(NAMESPACES, None, {"metadata": {"name": "n"}})
    store.create(CONFIGMAPS, "n", {"metadata": {"name": "a"}})
    store.create(PODS, "n", pod("p", nodeName="local"))
    store.delete(NAMESPACES, None, "n")
    assert store.get(NAMESPACES, None, "n")["status"]["phase"] == "Terminating"
    with pytest.raises(ApiError) as e:
        store.create(CONFIGMAPS, "n", {"metadata": {"name": "b"}})
    assert e.value.code == 403
    store.delete(PODS, "n", "p", grace_period_seconds=0)
    assert store.try_get(NAMESPACES, None, "n") is None


def test_validation_rejects_bad_objects(store):
    bad = [pod("Bad_Name"), dict(pod("a"), spec={"containers": [{"name": "c", "image": "x",
                                                                  "bogus": 1}]}),
           dict(pod("a"), spec={"containers": [{"name": "c", "image": "x"},
                                               {"name": "c", "image": "y"}]}),
           dict(pod("a"), spec={"containers": [{"name": "c", "image": "x", "volumeMounts": [
               {"name": "v", "mountPath": "/x"}]}]})]
    for obj in bad:
        with pytest.raises(ApiError) as e:
            store.create(PODS, "default", obj)
        assert (e.value.code, e.value.reason) == (422, "Invalid")
        assert e.value.details["causes"]


def test_dependent_with_another_live_owner_only_loses_the_reference(store):
    j1 = store.create(JOBS, "default", job("j1"))
    j2 = store.create(JOBS, "default", job("j2"))
    p = owned_pod("p", j1)
    p["metadata"]["ownerReferences"].append({"apiVersion": "batch/v1", "kind": "Job",
                                             "name": "j2", "uid": j2["metadata"]["uid"]})
    store.create(PODS, "default", p)
    store.delete(JOBS, "default", "j1", propagation="Background")
    refs = store.get(PODS, "default", "p")["metadata"]["ownerReferences"]
    assert [r["name"] for r in refs] == ["j2"]


def test_mutate_removing_last_finalizer_removes_a_deleted_object(store):
    store.create(CONFIGMAPS, "default", {"metadata": {"name": "a", "finalizers": ["x/y"]}})
    store.delete(CONFIGMAPS, "default", "a")
    store.mutate(CONFIGMAPS, "default", "a", lambda o: o["metadata"].pop("finalizers"))
    assert store.try_get(CONFIGMAPS, "default", "a") is None


def test_terminated_pod_is_removed_at_once(store):
    store.create(PODS, "default", pod("a", nodeName="local"))
    store.mutate(PODS, "default", "a", lambda o: o["status"].update(phase="Succeeded"))
    store.delete(PODS, "default", "a")
    assert store.try_get(PODS, "default", "a") is None


def test_watch_events_are_copies(store):
    w = store.watch(CONFIGMAPS, "default", store.resource_version)
    store.create(CONFIGMAPS, "default", {"metadata": {"name": "a"}, "data": {"k": "1"}})
    _, obj = w.get_nowait()
    obj["data"]["k"] = "changed"
    assert store.get(CONFIGMAPS, "default", "a")["data"] == {"k": "1"}


def test_pod_spec_is_immutable_through_updates(store):
    store.create(PODS, "default", pod("a"))
    with pytest.raises(ApiError) as e:
        store.patch(PODS, "default", "a", {"spec": {"restartPolicy": "Never"}}, "merge")
    assert e.value.code == 422
    p = store.patch(PODS, "default", "a", [{"op": "replace", "path": "/spec/containers/0/image",
                                            "value": "busybox:2"}], "json")
    assert p["spec"]["containers"][0]["image"] == "busybox:2"


def test_shared_subscribers_get_the_stored_object_others_a_copy(store):
    shared, copied = [], []
    store.subscribe(lambda t, res, obj: shared.append(obj), shared=True)
    store.subscribe(lambda t, res, obj: copied.append(obj))
    store.create(CONFIGMAPS, "default", {"metadata": {"name": "c"}, "data": {"a": "1"}})
    stored = store._table(CONFIGMAPS)[("default", "c")]
    assert shared[0] is stored
    assert copied[0] == stored and copied[0] is not stored


def test_a_shared_subscriber_that_changes_the_object_fails_the_write(store, monkeypatch):
    from localcluster.apiserver import store as store_module
    monkeypatch.setattr(store_module, "CHECK_SHARED", True)
    store.subscribe(lambda t, res, obj: obj["data"].update(a="changed"), shared=True)
    with pytest.raises(store_module.SharedObjectChanged):
        store.create(CONFIGMAPS, "default", {"metadata": {"name": "c"}, "data": {"a": "1"}})
