"""The Job and TTL controllers on an in-process store (with the real kubelet running pods)."""
from __future__ import annotations

from localcluster.controllers.jobs import pod_from_template
from localcluster.apiserver.resources import JOBS, PODS

from .kubelet_fixtures import run_in_process


def _job(name: str, args: list[str], **spec) -> dict:
    return {"metadata": {"name": name},
            "spec": {"template": {"metadata": {"labels": {"app": "t"}},
                                  "spec": {"restartPolicy": "Never",
                                           "terminationGracePeriodSeconds": 5,
                                           "containers": [{"name": "main", "image": "test/sh",
                                                           "args": args}]}},
                     **spec}}


def _status(h, name):
    job = h.store.try_get(JOBS, "default", name)
    return (job or {}).get("status") or {}


def _condition(h, name):
    for c in _status(h, name).get("conditions") or []:
        if c["type"] in ("Complete", "Failed") and c["status"] == "True":
            return c
    return None


def _pods(h, name):
    return [p for p in h.store.list(PODS, "default")[0]
            if p["metadata"].get("labels", {}).get("job-name") == name]


def test_pods_from_the_template_carry_the_job_labels_and_owner_reference():
    job = {"metadata": {"name": "j", "namespace": "ns", "uid": "u1"},
           "spec": {"template": {"metadata": {"labels": {"app": "x"},
                                              "annotations": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c"}]}}}}
    pod = pod_from_template(job)
    meta = pod["metadata"]
    assert meta["generateName"] == "j-"
    assert meta["labels"] == {"app": "x", "controller-uid": "u1", "job-name": "j",
                              "batch.kubernetes.io/controller-uid": "u1",
                              "batch.kubernetes.io/job-name": "j"}
    assert meta["annotations"] == {"a": "b"}
    assert meta["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": "j",
                                        "uid": "u1", "controller": True,
                                        "blockOwnerDeletion": True}]
    assert pod["spec"] == {"containers": [{"name": "c"}]}


def test_a_successful_pod_completes_the_job(tmp_path):
    async def body(h):
        h.store.create(JOBS, "default", _job("ok", ["echo done"]))
        cond = await h.until(lambda: _condition(h, "ok"), what="finished")
        status = _status(h, "ok")
        assert cond["type"] == "Complete" and cond["lastTransitionTime"]
        assert status["succeeded"] == 1 and "failed" not in status
        assert status.get("active", 0) == 0 and status["completionTime"] and status["startTime"]
        assert status["uncountedTerminatedPods"] == {} and status["ready"] == 0
        pods = _pods(h, "ok")
        assert len(pods) == 1 and pods[0]["metadata"]["name"].startswith("ok-")
        assert len(pods[0]["metadata"]["name"]) == len("ok-") + 5
        reasons = [e["reason"] for e in h.events("ok")]
        assert "SuccessfulCreate" in reasons and "Completed" in reasons
    run_in_process(tmp_path, body)


def test_failing_pods_are_retried_until_the_backoff_limit(tmp_path):
    async def body(h):
        h.store.create(JOBS, "default", _job("bad", ["exit 1"], backoffLimit=1))
        cond = await h.until(lambda: _condition(h, "bad"), what="finished")
        assert (cond["type"], cond["reason"], cond["message"]) == (
            "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        assert _status(h, "bad")["failed"] == 2
        assert "completionTime" not in _status(h, "bad")
        assert len(_pods(h, "bad")) == 2
        assert all(p["status"]["phase"] == "Failed" for p in _pods(h, "bad"))
    run_in_process(tmp_path, body)


def test_the_active_deadline_fails_the_job_and_deletes_its_pods(tmp_path):
    async def body(h):
        h.store.create(JOBS, "default", _job("slow", ["sleep 60"], activeDeadlineSeconds=1,
                                             backoffLimit=0))
        cond = await h.until(lambda: _condition(h, "slow"), what="finished")
        assert (cond["type"], cond["reason"], cond["message"]) == (
            "Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
        await h.until(lambda: not _pods(h, "slow"), what="pods deleted")
        assert _status(h, "slow").get("active", 0) == 0
    run_in_process(tmp_path, body)


def test_ttl_after_finished_deletes_the_job_and_its_pods(tmp_path):
    async def body(h):
        h.store.create(JOBS, "default", _job("ttl", ["true"], ttlSecondsAfterFinished=0))
        await h.until(lambda: h.store.try_get(JOBS, "default", "ttl") is None, what="job deleted")
        await h.until(lambda: not _pods(h, "ttl"), what="pods collected")
    run_in_process(tmp_path, body)


def test_completions_and_parallelism_run_several_pods(tmp_path):
    async def body(h):
        h.store.create(JOBS, "default", _job("multi", ["true"], completions=3, parallelism=2))
        cond = await h.until(lambda: _condition(h, "multi"), what="finished")
        assert cond["type"] == "Complete"
        assert _status(h, "multi")["succeeded"] == 3 and len(_pods(h, "multi")) == 3
    run_in_process(tmp_path, body)


def test_a_pod_deleted_while_running_counts_as_failed_and_is_replaced(tmp_path):
    async def body(h):
        h.store.create(JOBS, "default", _job("del", ["sleep 60"], backoffLimit=3))
        first = (await h.until(lambda: [p for p in _pods(h, "del")
                                        if "running" in (p["status"].get("containerStatuses")
                                                         or [{}])[0].get("state", {})]))[0]
        h.store.delete(PODS, "default", first["metadata"]["name"])
        await h.until(lambda: _status(h, "del").get("failed") == 1, what="failure counted")
        await h.until(lambda: [p for p in _pods(h, "del")
                               if p["metadata"]["uid"] != first["metadata"]["uid"]],
                      what="replacement pod")
        assert _condition(h, "del") is None
    run_in_process(tmp_path, body)


def _running(h, name):
    return [p for p in _pods(h, name)
            if "running" in (p["status"].get("containerStatuses") or [{}])[0].get("state", {})]


def test_a_pod_being_deleted_fails_a_job_without_retries_and_is_not_replaced(tmp_path):
    # the node's Jobs use backoffLimit 0: a pod deleted from under a run must fail it, not start
    # the workload a second time (the real controller counts a terminating pod as failed at once)
    async def body(h):
        h.store.create(JOBS, "default", _job("once", ["sleep 60"], backoffLimit=0))
        first = (await h.until(lambda: _running(h, "once"), what="pod running"))[0]
        h.store.delete(PODS, "default", first["metadata"]["name"])
        cond = await h.until(lambda: _condition(h, "once"), what="finished")
        assert (cond["type"], cond["reason"]) == ("Failed", "BackoffLimitExceeded")
        assert _status(h, "once")["failed"] == 1
        await h.until(lambda: not _pods(h, "once"), what="pod gone")
        created = [e for e in h.events("once") if e["reason"] == "SuccessfulCreate"]
        assert len(created) == 1
    run_in_process(tmp_path, body)


def test_with_pod_replacement_policy_failed_the_replacement_waits_for_termination(tmp_path):
    async def body(h):
        h.store.create(JOBS, "default", _job("wait", ["sleep 60"], backoffLimit=2,
                                             podReplacementPolicy="Failed"))
        first = (await h.until(lambda: _running(h, "wait"), what="pod running"))[0]
        order = []  # the store's events, in the order they happened

        def record(etype, res, obj):
            if res == PODS and obj["metadata"].get("labels", {}).get("job-name") == "wait":
                order.append((etype, obj["metadata"]["uid"]))
        h.store.subscribe(record)
        try:
            h.store.delete(PODS, "default", first["metadata"]["name"])
            await h.until(lambda: [p for p in _pods(h, "wait")
                                   if p["metadata"]["uid"] != first["metadata"]["uid"]],
                          what="replacement pod")
        finally:
            h.store.unsubscribe(record)
        added = order.index(next(e for e in order if e[0] == "ADDED"))
        assert ("DELETED", first["metadata"]["uid"]) in order[:added]
        assert _status(h, "wait")["failed"] == 1
    run_in_process(tmp_path, body)


def test_a_deleted_job_creates_nothing_more(tmp_path):
    async def body(h):
        h.store.create(JOBS, "default", _job("gone", ["sleep 60"]))
        await h.until(lambda: _pods(h, "gone"), what="pod created")
        h.store.delete(JOBS, "default", "gone", propagation="Background")
        await h.until(lambda: not _pods(h, "gone"), what="pods collected")
        assert h.store.try_get(JOBS, "default", "gone") is None
    run_in_process(tmp_path, body)
