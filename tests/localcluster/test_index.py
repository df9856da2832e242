"""The store's index narrows lists; the answer must be the one a scan of every object gives."""
from __future__ import annotations

import random

import pytest

from localcluster.apiserver.index import Index
from localcluster.apiserver.selectors import FieldSelector, LabelSelector, make_filter


def _pods(n: int, seed: int) -> dict:
    rnd = random.Random(seed)
    objs = {}
    for i in range(n):
        ns = rnd.choice(["a", "b", "c"])
        obj = {"metadata": {"name": f"p{i}", "namespace": ns,
                            "labels": {"job-name": f"j{rnd.randrange(20)}",
                                       "tier": rnd.choice(["x", "y"])}},
               "spec": {"nodeName": rnd.choice(["n1", "n2", ""])}}
        objs[(ns, f"p{i}")] = obj
    return objs


SELECTORS = [  # namespace, labels, fields, whether the index narrows
    (None, "", "", False), ("a", "", "", True), ("b", "job-name=j3", "", True),
    (None, "job-name in (j1,j2)", "", True), ("c", "tier=x,job-name=j7", "spec.nodeName=n1", True),
    ("a", "", "metadata.name=p5", True), (None, "tier!=x", "", False),
    ("b", "job-name=nothing", "", True), (None, "", "spec.nodeName=", True),
    ("a", "job-name=j1", "metadata.name!=p1", True),
]


@pytest.mark.parametrize("namespace,labels,fields,narrows", SELECTORS)
def test_candidates_then_filter_equal_a_full_scan(namespace, labels, fields, narrows):
    objs = _pods(400, seed=7)
    index = Index("pods")
    for key, obj in objs.items():
        index.add(key, obj)
    ls = LabelSelector.parse(labels)
    fs = FieldSelector.parse(fields, ("metadata.name", "metadata.namespace", "spec.nodeName"))
    filt = make_filter(ls, fs)
    keys = index.candidates(namespace, ls, fs)
    found = {k for k in (objs if keys is None else keys) if filt(objs[k])
             and (namespace is None or k[0] == namespace)}
    scan = {k for k, o in objs.items() if filt(o) and (namespace is None or k[0] == namespace)}
    assert found == scan
    assert (keys is not None) == narrows
    if narrows:  # exactly the objects in the namespace that meet every indexed term
        indexed = make_filter(LabelSelector([r for r in ls.requirements if r.op == "in"]),
                              FieldSelector([t for t in fs.terms if t[1]]))
        assert keys == {k for k, o in objs.items()
                        if (namespace is None or k[0] == namespace) and indexed(o)}


def test_removed_objects_are_no_candidates():
    objs = _pods(50, seed=3)
    index = Index("pods")
    for key, obj in objs.items():
        index.add(key, obj)
    gone = next(iter(objs))
    index.discard(gone, objs[gone])
    keys = index.candidates(gone[0], LabelSelector.parse(""), FieldSelector.parse(""))
    assert gone not in keys and len(keys) == sum(1 for k in objs if k[0] == gone[0]) - 1


def test_candidates_do_not_share_the_index_sets():
    objs = _pods(30, seed=1)
    index = Index("pods")
    for key, obj in objs.items():
        index.add(key, obj)
    keys = index.candidates("a", LabelSelector.parse(""), FieldSelector.parse(""))
    keys.clear()  # the caller's copy: the index must still know namespace a
    assert index.candidates("a", LabelSelector.parse(""), FieldSelector.parse(""))
