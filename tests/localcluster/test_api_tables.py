"""Server-side printing for kubectl (localcluster.apiserver.tables), without kubectl."""
from __future__ import annotations

import datetime as dt

import pytest

from localcluster.apiserver import tables
from localcluster.apiserver.resources import DEPLOYMENTS, PODS, SERVICES

NOW = dt.datetime(2026, 1, 2, 12, 0, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("seconds, age", [(5, "5s"), (119, "119s"), (130, "2m10s"),
                                          (600, "10m"), (3 * 3600, "3h"), (50 * 3600, "2d")])
def test_human_age(seconds, age):
    created = (NOW - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert tables.human_age(created, NOW) == age


def test_kubectl_accept_header_asks_for_a_table():
    assert tables.wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
    assert not tables.wants_table("application/json")
    assert not tables.wants_table(None)
    assert tables.supports(PODS) and tables.supports(DEPLOYMENTS)
    assert not tables.supports(SERVICES)


def test_pod_rows_show_readiness_waiting_reasons_and_restarts():
    pod = {"metadata": {"name": "p", "creationTimestamp": "2026-01-02T11:59:00Z",
                        "resourceVersion": "7"},
           "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "localcluster"},
           "status": {"phase": "Pending", "podIP": "127.0.1.2", "containerStatuses": [
               {"name": "a", "ready": True, "restartCount": 2, "state": {"running": {}}},
               {"name": "b", "ready": False, "restartCount": 1,
                "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}}
    t = tables.table(PODS, [pod], "9", None)
    assert [c["name"] for c in t["columnDefinitions"]] == \
        ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node"]
    [row] = t["rows"]
    assert row["cells"][:4] == ["p", "1/2", "ImagePullBackOff", 3]
    assert row["cells"][5:] == ["127.0.1.2", "localcluster"]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["name"] == "p"
    assert tables.table(PODS, [pod], "9", "Object")["rows"][0]["object"] is pod
