"""The store's indexes (localcluster.apiserver.index) change what a list reads, never what it
answers: after any mix of writes, a list with selectors equals a scan of every object filtered by
the same selectors."""
from __future__ import annotations

import random

import pytest

from localcluster.apiserver.errors import ApiError
from localcluster.apiserver.selectors import FieldSelector, LabelSelector
from localcluster.apiserver.store import EVENTS, NAMESPACES, PODS, Store

NAMESPACES_USED = ("default", "v6-jobs")
LABEL_SELECTORS = ("", "app=a", "app=b", "app in (a, c)", "app!=a", "app", "!app",
                   "app=a,tier=x", "tier notin (x)", "job-name=j3", "app=nothing")
POD_FIELDS = ("", "spec.nodeName=n1", "spec.nodeName=", "spec.nodeName!=n1",
              "metadata.name=p7", "spec.nodeName=n2,metadata.name=p5", "status.phase=Running")
EVENT_FIELDS = ("", "involvedObject.name=p3", "involvedObject.name=p3,reason=R1",
                "involvedObject.uid=u2", "involvedObject.name!=p3", "reason=R2")


def _labels(rng: random.Random) -> dict:
    labels = {}
    if rng.random() < 0.8:
        labels["app"] = rng.choice("abc")
    if rng.random() < 0.5:
        labels["tier"] = rng.choice("xy")
    if rng.random() < 0.3:
        labels["job-name"] = f"j{rng.randrange(5)}"
    return labels


def _pod(rng: random.Random, name: str) -> dict:
    spec = {"containers": [{"name": "c", "image": "busybox"}]}
    if rng.random() < 0.6:
        spec["nodeName"] = rng.choice(("n1", "n2"))
    return {"metadata": {"name": name, "labels": _labels(rng)}, "spec": spec}


def _event(rng: random.Random, name: str) -> dict:
    return {"metadata": {"name": name, "labels": _labels(rng)},
            "involvedObject": {"kind": "Pod", "name": f"p{rng.randrange(10)}",
                               "uid": f"u{rng.randrange(4)}"},
            "reason": rng.choice(("R1", "R2")), "message": "m", "type": "Normal"}


def _write(store: Store, rng: random.Random) -> None:
    """One random write through each of the store's write paths."""
    res = rng.choice((PODS, PODS, EVENTS))
    ns = rng.choice(NAMESPACES_USED)
    name = f"{'p' if res == PODS else 'e'}{rng.randrange(10)}"
    current = store.try_get(res, ns, name)
    op = rng.choice(("create", "replace", "patch", "mutate", "delete", "status"))
    try:
        if current is None or op == "create":
            store.create(res, ns, (_pod if res == PODS else _event)(rng, name))
        elif op == "replace":
            current["metadata"]["labels"] = _labels(rng)
            store.replace(res, ns, name, current)
        elif op == "patch":
            store.patch(res, ns, name, {"metadata": {"labels": {
                "app": rng.choice(("a", "b", None)), "tier": rng.choice(("x", None))}}},
                "merge")
        elif op == "mutate" and res == PODS:  # a controller binding a pod, or moving it
            store.mutate(res, ns, name, lambda o: o["spec"].update(nodeName=rng.choice(
                ("n1", "n2"))))
        elif op == "status" and res == PODS:
            store.mutate(res, ns, name, lambda o: o.setdefault("status", {}).update(
                phase=rng.choice(("Pending", "Running"))))
        else:
            store.delete(res, ns, name, grace_period_seconds=0)
    except ApiError as e:
        assert e.code in (409, 422), e  # an existing name, an immutable field: refused as real


def _scanned(store: Store, res, ns: str | None, ls: str, fs: str) -> list[str]:
    label_sel = LabelSelector.parse(ls)
    field_sel = FieldSelector.parse(fs, res.selectable_fields)
    every, _ = store.list(res)  # no selector, no namespace: nothing to narrow by
    return [f'{o["metadata"]["namespace"]}/{o["metadata"]["name"]}' for o in every
            if (ns is None or o["metadata"]["namespace"] == ns)
            and label_sel.matches(o["metadata"].get("labels")) and field_sel.matches(o)]


def _listed(store: Store, res, ns: str | None, ls: str, fs: str) -> list[str]:
    items, _ = store.list(res, ns, label_selector=ls or None, field_selector=fs or None)
    return [f'{o["metadata"]["namespace"]}/{o["metadata"]["name"]}' for o in items]


@pytest.mark.parametrize("seed", range(2))
def test_lists_with_selectors_answer_as_a_scan_after_any_writes(seed):
    rng = random.Random(seed)
    store = Store(seed=seed)
    store.create(NAMESPACES, None, {"metadata": {"name": "v6-jobs"}})
    checked = 0
    for step in range(400):
        _write(store, rng)
        if step % 25:
            continue
        for ns in (None,) + NAMESPACES_USED:
            for ls in LABEL_SELECTORS:
                for res, fields in ((PODS, POD_FIELDS), (EVENTS, EVENT_FIELDS)):
                    for fs in fields:
                        want = _scanned(store, res, ns, ls, fs)
                        assert _listed(store, res, ns, ls, fs) == want, (res, ns, ls, fs)
                        checked += bool(want)
    assert checked > 100  # the selectors did match things: not a comparison of empty lists


def test_a_removed_object_leaves_no_trace_in_the_index():
    store = Store()
    store.create(PODS, "default", {"metadata": {"name": "p", "labels": {"app": "a"}}, "spec": {
        "nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}})
    store.delete(PODS, "default", "p", grace_period_seconds=0)
    index = store._index(PODS)
    assert not any(k == ("default", "p") for keys in (
        *index._by_label.values(), *index._by_field.values()) for k in keys)
    assert store.list(PODS, "default", "app=a", "spec.nodeName=n1")[0] == []
