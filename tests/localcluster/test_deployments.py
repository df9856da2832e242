"""Deployment controller (localcluster.controllers.deployments): pods from the template, replacement,
scaling, rolling update, status, garbage collection. In process (store + controllers)."""
from __future__ import annotations

import copy

from localcluster.controllers.deployments import HASH_LABEL, compute_status, template_hash
from localcluster.apiserver.resources import DEPLOYMENTS, NAMESPACES, PODS
from tests.localcluster.kubelet_fixtures import run_in_process


def deployment(name: str = "web", replicas: int = 2, args: str = "exec sleep 60") -> dict:
    labels = {"app": name}
    return {"metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"terminationGracePeriodSeconds": 2,
                                           "containers": [{"name": "main", "image": "test/sh",
                                                           "args": [args]}]}}}}


def pods_of(c, name: str = "web", ns: str = "default", live: bool = True) -> list[dict]:
    pods = c.store.list(PODS, ns, label_selector=f"app={name}")[0]
    return [p for p in pods if not (live and p["metadata"].get("deletionTimestamp"))]


def rolled_out(c, name: str = "web", ns: str = "default") -> dict | None:
    """The Deployment when `kubectl rollout status` would call it done."""
    d = c.store.get(DEPLOYMENTS, ns, name)
    s, want = d.get("status") or {}, d["spec"]["replicas"]
    done = (s.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and s.get("updatedReplicas", 0) == want == s.get("replicas", 0)
            and s.get("availableReplicas", 0) == want
            and len(pods_of(c, name, ns, live=False)) == want)
    return d if done else None


def test_pods_from_template_with_hash_owner_and_status(tmp_path):
    async def body(c):
        dep = c.store.create(DEPLOYMENTS, "default", deployment())
        d = await c.until(lambda: rolled_out(c), what="rollout")
        pods = pods_of(c)
        assert len(pods) == 2
        want_hash = template_hash(dep["spec"]["template"])
        for p in pods:
            assert p["metadata"]["labels"] == {"app": "web", HASH_LABEL: want_hash}
            assert p["metadata"]["name"].startswith(f"web-{want_hash}-")
            ref, = p["metadata"]["ownerReferences"]
            assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == \
                ("Deployment", "web", dep["metadata"]["uid"], True)
        conditions = {x["type"]: (x["status"], x["reason"]) for x in d["status"]["conditions"]}
        assert conditions == {"Available": ("True", "MinimumReplicasAvailable"),
                              "Progressing": ("True", "NewReplicaSetAvailable")}
        assert d["status"]["readyReplicas"] == 2
        assert "unavailableReplicas" not in d["status"]
    run_in_process(tmp_path, body)


def test_deleted_pod_is_replaced_and_scaling_follows_replicas(tmp_path):
    async def body(c):
        c.store.create(DEPLOYMENTS, "default", deployment(replicas=2))
        await c.until(lambda: rolled_out(c), what="rollout")
        victim = pods_of(c)[0]["metadata"]["name"]
        c.store.delete(PODS, "default", victim)
        await c.until(lambda: len(pods_of(c)) == 2
                      and victim not in {p["metadata"]["name"] for p in pods_of(c)},
                      what="a replacement pod")
        await c.until(lambda: rolled_out(c), what="rollout after the replacement")

        c.store.mutate(DEPLOYMENTS, "default", "web", lambda d: d["spec"].update(replicas=3))
        await c.until(lambda: rolled_out(c), what="scale up to 3")
        c.store.mutate(DEPLOYMENTS, "default", "web", lambda d: d["spec"].update(replicas=1))
        d = await c.until(lambda: rolled_out(c), what="scale down to 1")
        assert d["status"]["replicas"] == 1
    run_in_process(tmp_path, body)


def test_failed_pod_is_deleted_and_replaced(tmp_path):
    async def body(c):
        c.store.create(DEPLOYMENTS, "default", deployment(replicas=1))
        await c.until(lambda: rolled_out(c), what="rollout")
        first = pods_of(c)[0]["metadata"]["name"]
        # as an eviction leaves a pod: phase Failed, containers stopped
        c.store.mutate(PODS, "default", first,
                       lambda p: p["status"].update(phase="Failed", reason="Evicted"))
        await c.until(lambda: c.pod(first) is None, what="the failed pod to go")
        await c.until(lambda: rolled_out(c), what="a replacement")
        assert pods_of(c)[0]["metadata"]["name"] != first
    run_in_process(tmp_path, body)


def test_template_change_replaces_every_pod(tmp_path):
    async def body(c):
        c.store.create(DEPLOYMENTS, "default", deployment(replicas=2))
        await c.until(lambda: rolled_out(c), what="rollout")
        before = {p["metadata"]["name"] for p in pods_of(c)}

        def change(d):
            d["spec"]["template"]["metadata"]["annotations"] = {"restartedAt": "now"}
        new = c.store.mutate(DEPLOYMENTS, "default", "web", change)
        assert new["metadata"]["generation"] == 2
        d = await c.until(lambda: rolled_out(c), what="rollout of the new template")
        after = pods_of(c)
        assert not before & {p["metadata"]["name"] for p in after}
        new_hash = template_hash(new["spec"]["template"])
        assert {p["metadata"]["labels"][HASH_LABEL] for p in after} == {new_hash}
        assert all(p["metadata"]["annotations"] == {"restartedAt": "now"} for p in after)
        assert d["status"]["observedGeneration"] == 2
    run_in_process(tmp_path, body)


def test_deleting_the_deployment_removes_its_pods(tmp_path):
    async def body(c):
        c.store.create(NAMESPACES, None, {"metadata": {"name": "apps"}})
        c.store.create(DEPLOYMENTS, "apps", deployment(replicas=2))
        await c.until(lambda: rolled_out(c, ns="apps"), what="rollout")
        c.store.delete(DEPLOYMENTS, "apps", "web")
        await c.until(lambda: not pods_of(c, ns="apps", live=False), timeout=20,
                      what="the pods to be garbage collected")
    run_in_process(tmp_path, body)


def _pod(hash_: str, ready: bool) -> dict:
    return {"metadata": {"labels": {HASH_LABEL: hash_}},
            "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}


def test_status_while_rolling_and_when_done():
    dep = {"metadata": {"name": "web", "generation": 3}, "spec": {"replicas": 2}}
    rolling = compute_status(dep, [_pod("old", True), _pod("new", False)], "new")
    assert (rolling["replicas"], rolling["updatedReplicas"], rolling["readyReplicas"],
            rolling["availableReplicas"], rolling["unavailableReplicas"],
            rolling["observedGeneration"]) == (2, 1, 1, 1, 1, 3)
    kinds = {c["type"]: (c["status"], c["reason"]) for c in rolling["conditions"]}
    assert kinds == {"Available": ("False", "MinimumReplicasUnavailable"),
                     "Progressing": ("True", "ReplicaSetUpdated")}

    done_dep = {**dep, "status": rolling}
    done = compute_status(done_dep, [_pod("new", True), _pod("new", True)], "new")
    assert {c["type"]: c["reason"] for c in done["conditions"]} == \
        {"Available": "MinimumReplicasAvailable", "Progressing": "NewReplicaSetAvailable"}
    # an unchanged condition keeps its times, so a repeated sync writes nothing
    assert compute_status({**dep, "status": done}, [_pod("new", True)] * 2, "new") == done


def test_template_hash_is_stable_and_changes_with_the_template():
    t = deployment()["spec"]["template"]
    assert template_hash(t) == template_hash(copy.deepcopy(t))
    t2 = copy.deepcopy(t)
    t2["spec"]["containers"][0]["image"] = "test/python"
    assert template_hash(t2) != template_hash(t)
