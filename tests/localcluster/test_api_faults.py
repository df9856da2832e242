"""/localcluster/metrics and /localcluster/faults, observed through the official client."""
from __future__ import annotations

import kubernetes
import pytest
from kubernetes.client import ApiException

from localcluster.testing import LocalClusterError

pytestmark = pytest.mark.integration


def test_metrics_count_requests_per_verb_and_resource(cluster, api, namespace):
    core, batch, _ = api
    cluster.reset_metrics()
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "a"}})
    core.read_namespaced_config_map("a", namespace)
    core.list_namespaced_config_map(namespace)
    core.patch_namespaced_config_map("a", namespace, {"data": {"k": "v"}})
    cm = core.read_namespaced_config_map("a", namespace)
    core.replace_namespaced_config_map("a", namespace, cm)
    list(kubernetes.watch.Watch().stream(core.list_namespaced_config_map, namespace,
                                         timeout_seconds=1))
    core.delete_namespaced_config_map("a", namespace)
    batch.list_namespaced_job(namespace)
    with pytest.raises(ApiException):
        batch.read_namespaced_job_status("nope", namespace)
    m = cluster.metrics()
    assert m["requests"] == {"create configmaps": 1, "get configmaps": 2,
                             "list configmaps": 1, "patch configmaps": 1,
                             "update configmaps": 1, "watch configmaps": 1,
                             "delete configmaps": 1, "list jobs": 1, "get jobs/status": 1}
    assert m["total"] == 10
    assert cluster.reset_metrics()["total"] == 0


def test_error_rate_for_one_verb_with_429_retry_after(cluster, api, namespace):
    core, _, _ = api
    cluster.set_faults({"error_rate": {"create": 1.0}, "error_codes": [429]})
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "a"}})
    assert e.value.status == 429 and e.value.headers["Retry-After"] == "1"
    assert '"TooManyRequests"' in e.value.body
    assert core.list_namespaced_config_map(namespace).items == []  # other verbs unaffected
    assert cluster.metrics()["total"] > 0  # /localcluster/* is never faulted


def test_error_rate_is_deterministic_with_a_seed(cluster, api, namespace):
    core, _, _ = api

    def outcomes():
        cluster.set_faults({"error_rate": {"*": 0.5}, "error_codes": [500, 503], "seed": 7})
        out = []
        for _ in range(30):
            try:
                core.list_namespaced_config_map(namespace)
                out.append(200)
            except ApiException as e:
                out.append(e.status)
        return out

    first = outcomes()
    assert set(first) == {200, 500, 503}
    assert outcomes() == first


def test_watch_cut_after_n_events(cluster, api, namespace):
    core, _, _ = api
    for name in "abcde":
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name}})
    cluster.set_faults({"watch_cut_after": 2})
    events = list(kubernetes.watch.Watch().stream(core.list_namespaced_config_map, namespace,
                                                  timeout_seconds=5))
    assert [e["object"].metadata.name for e in events] == ["a", "b"]


def test_expire_watches_answers_the_next_watch_with_410(cluster, api, namespace):
    core, _, _ = api
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    cluster.set_faults({"expire_watches": True})
    assert cluster.faults()["expire_watches"] is True
    with pytest.raises(ApiException) as e:
        list(kubernetes.watch.Watch().stream(core.list_namespaced_config_map, namespace,
                                             resource_version=rv, timeout_seconds=2))
    assert e.value.status == 410
    assert cluster.faults()["expire_watches"] is False  # one-shot
    assert list(kubernetes.watch.Watch().stream(core.list_namespaced_config_map, namespace,
                                                resource_version=rv, timeout_seconds=1)) == []


def test_bad_fault_settings_are_rejected(cluster):
    with pytest.raises(LocalClusterError, match="400"):
        cluster.set_faults({"error_rate": {"get": 2}})
    with pytest.raises(LocalClusterError, match="400"):
        cluster.set_faults({"surprise": True})


def test_watch_cut_reset_drops_the_connection(cluster, api, namespace):
    core, _, _ = api
    for name in "abc":
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name}})
    cluster.set_faults({"watch_cut_after": 1, "watch_cut_mode": "reset"})
    seen = []
    with pytest.raises(Exception) as e:  # urllib3 reports the dropped chunked stream
        for ev in kubernetes.watch.Watch().stream(core.list_namespaced_config_map, namespace,
                                                  timeout_seconds=5):
            seen.append(ev["object"].metadata.name)
    assert not isinstance(e.value, ApiException)
    assert seen == ["a"]
