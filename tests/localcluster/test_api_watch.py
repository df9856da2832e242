"""Watches through kubernetes.watch.Watch: resume from a resourceVersion, initial events,
timeoutSeconds, 410 Expired for a version older than the kept history, bookmarks."""
from __future__ import annotations

import threading

import kubernetes
import pytest
from kubernetes.client import ApiException

from localcluster.testing import LocalCluster

pytestmark = pytest.mark.integration


def collect(func, *args, **kwargs):
    w = kubernetes.watch.Watch()
    return [(e["type"], e["object"].metadata.name) for e in w.stream(func, *args, **kwargs)]


def test_watch_from_resource_version_sees_exactly_the_later_events(api, namespace):
    core, _, _ = api
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "before"}})
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "a"}})
    core.patch_namespaced_config_map("a", namespace, {"data": {"k": "v"}})
    core.delete_namespaced_config_map("a", namespace)
    events = collect(core.list_namespaced_config_map, namespace, resource_version=rv,
                     timeout_seconds=1)
    assert events == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]


def test_watch_without_version_starts_with_current_objects(api, namespace):
    core, _, _ = api
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "a"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "b"}})
    events = collect(core.list_namespaced_config_map, namespace, timeout_seconds=1)
    assert events == [("ADDED", "a"), ("ADDED", "b")]


def test_watch_with_label_selector_sees_live_events(api, namespace):
    core, _, _ = api
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    seen = []
    done = threading.Event()

    def watch():
        w = kubernetes.watch.Watch()
        for e in w.stream(core.list_namespaced_config_map, namespace, label_selector="app=x",
                          resource_version=rv, timeout_seconds=5):
            seen.append((e["type"], e["object"].metadata.name))
            if len(seen) == 2:
                w.stop()
        done.set()

    t = threading.Thread(target=watch)
    t.start()
    try:
        for name, app in (("c1", "y"), ("c2", "x")):
            core.create_namespaced_config_map(namespace, {"metadata": {"name": name,
                                                                       "labels": {"app": app}}})
        core.delete_namespaced_config_map("c2", namespace)
        assert done.wait(10)
    finally:
        t.join(10)
    assert seen == [("ADDED", "c2"), ("DELETED", "c2")]


def test_timeout_seconds_ends_the_watch(api, namespace):
    core, _, _ = api
    # An empty namespace and no version: nothing to send; the stream must end by itself.
    assert collect(core.list_namespaced_secret, namespace, timeout_seconds=1) == []


def test_watch_across_namespaces(api, namespace):
    _, batch, _ = api
    rv = batch.list_job_for_all_namespaces().metadata.resource_version
    batch.create_namespaced_job(namespace, {"metadata": {"name": "j"}, "spec": {"template": {
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}})
    events = collect(batch.list_job_for_all_namespaces, resource_version=rv, timeout_seconds=1)
    assert ("ADDED", "j") in events


def test_stale_resource_version_raises_410():
    with LocalCluster(history=5) as lc:
        core = kubernetes.client.CoreV1Api(lc.api_client())
        cm = core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
        for i in range(10):
            core.patch_namespaced_config_map("a", "default", {"data": {"i": str(i)}})
        with pytest.raises(ApiException) as e:
            collect(core.list_namespaced_config_map, "default",
                    resource_version=cm.metadata.resource_version, timeout_seconds=2)
        assert e.value.status == 410
        # a recent version is still fine
        rv = core.list_namespaced_config_map("default").metadata.resource_version
        assert collect(core.list_namespaced_config_map, "default", resource_version=rv,
                       timeout_seconds=1) == []


def test_bookmarks_when_allowed_and_clean_end_at_timeout():
    import json

    import requests
    with LocalCluster(extra_args=["--bookmark-interval", "0.2"]) as lc:
        url = f"{lc.server}/api/v1/namespaces/default/configmaps"
        headers = {"Authorization": f"Bearer {lc.token}"}
        rv = requests.get(url, headers=headers, verify=lc.verify,
                          timeout=5).json()["metadata"]["resourceVersion"]
        with requests.get(url, params={"watch": "true", "allowWatchBookmarks": "true",
                                       "timeoutSeconds": "1", "resourceVersion": rv},
                          headers=headers, stream=True, verify=lc.verify, timeout=10) as r:
            events = [json.loads(line) for line in r.iter_lines() if line]
        assert r.status_code == 200
        assert events and {e["type"] for e in events} == {"BOOKMARK"}
        assert events[0]["object"]["kind"] == "ConfigMap"
        assert int(events[0]["object"]["metadata"]["resourceVersion"]) >= int(rv)
        # without allowWatchBookmarks: none
        with requests.get(url, params={"watch": "true", "timeoutSeconds": "1",
                                       "resourceVersion": rv},
                          headers=headers, stream=True, verify=lc.verify, timeout=10) as r:
            assert [line for line in r.iter_lines() if line] == []


@pytest.mark.parametrize("spelling", ["true", "True", "1", "t", "TRUE"])
def test_watch_flag_is_read_as_go_parses_booleans(cluster, namespace, spelling):
    """Clients spell the flag differently (the Python client sends `True`); each spelling the
    real server accepts must start a watch, not answer with a list."""
    import requests
    url = f"{cluster.server}/api/v1/namespaces/{namespace}/configmaps"
    headers = {"Authorization": f"Bearer {cluster.token}"}
    requests.post(url, json={"metadata": {"name": f"cm-{spelling.lower()}"}}, headers=headers,
                  verify=cluster.verify, timeout=10).raise_for_status()
    resp = requests.get(url, params={"watch": spelling, "timeoutSeconds": "1"}, headers=headers,
                        verify=cluster.verify, timeout=10)
    lines = [line for line in resp.text.splitlines() if line.strip()]
    import json
    events = [json.loads(line) for line in lines]
    assert events and all(e["type"] == "ADDED" for e in events), resp.text[:300]


def test_a_streaming_list_is_refused_as_by_a_1_30_server(api, namespace):
    # WatchList is off in 1.30: sendInitialEvents is refused with 422, and clients (kubectl
    # 1.35+, client-go informers) fall back to list, then watch
    import json
    core = api[0]
    with pytest.raises(ApiException) as e:
        core.api_client.call_api(
            f"/api/v1/namespaces/{namespace}/configmaps", "GET",
            query_params=[("watch", "true"), ("sendInitialEvents", "true"),
                          ("resourceVersionMatch", "NotOlderThan"),
                          ("allowWatchBookmarks", "true")],
            auth_settings=["BearerToken"], _preload_content=False)
    assert e.value.status == 422
    assert "sendInitialEvents is forbidden" in json.loads(e.value.body)["message"]
