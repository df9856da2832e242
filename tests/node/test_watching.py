"""The node's watcher against the local cluster: list then watch, relist on 410, resume on cuts,
never a stranger's objects."""
from __future__ import annotations

import threading

import pytest

from localcluster.testing import LocalCluster, wait_until
from node.cluster import Cluster
from node.watching import Poller, Watcher

NS = "v6-jobs"
MINE = "app.kubernetes.io/managed-by=v6-node,v6.node-id=node-a"


def config_map(name: str, node: str = "node-a") -> dict:
    # ConfigMaps need no controller: the test alone decides what changes
    return {"metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "v6-node",
                                                  "v6.node-id": node}},
            "data": {"v": "1"}}


class Recorder:
    def __init__(self):
        self.items: list[tuple] = []
        self.lock = threading.Lock()

    def __call__(self, item):
        with self.lock:
            self.items.append(item)

    def names_seen(self) -> set[str]:
        """Names present in the latest sync or added by later events (and not deleted)."""
        with self.lock:
            items = list(self.items)
        names: set[str] = set()
        for item in items:
            if item[0] == "sync":
                names = {o["metadata"]["name"] for o in item[2]}
            else:
                event = item[2]
                name = event.object["metadata"]["name"]
                if event.type == "DELETED":
                    names.discard(name)
                else:
                    names.add(name)
        return names

    def syncs(self) -> int:
        with self.lock:
            return sum(1 for i in self.items if i[0] == "sync")


@pytest.fixture
def cluster():
    with LocalCluster() as lc:
        api = lc.api_client()
        from kubernetes import client
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
        yield lc, api


class ConfigMapCluster(Cluster):
    """The node's Cluster, pointed at ConfigMaps so the test controls every change."""

    def _list_fn(self, kind):
        return self.core.list_namespaced_config_map


@pytest.fixture
def watched(cluster):
    lc, api = cluster
    from kubernetes import client
    core = client.CoreV1Api(api)
    stop = threading.Event()
    rec = Recorder()
    watcher = Watcher(ConfigMapCluster(api, NS, 5), "configmaps", MINE, rec, stop,
                      timeout_seconds=2)
    core.create_namespaced_config_map(NS, config_map("before"))
    watcher.start()
    yield lc, core, rec, watcher
    stop.set()
    watcher.interrupt()
    watcher.join(10)
    assert not watcher.is_alive()


def test_lists_then_watches_only_its_own_objects(watched):
    lc, core, rec, watcher = watched
    wait_until(lambda: rec.syncs() == 1, 10, "first list")
    core.create_namespaced_config_map(NS, config_map("mine"))
    core.create_namespaced_config_map(NS, config_map("theirs", node="node-b"))
    core.delete_namespaced_config_map("before", NS)
    wait_until(lambda: rec.names_seen() == {"mine"}, 10, "watch events")
    assert all(o["metadata"]["labels"]["v6.node-id"] == "node-a"
               for i in rec.items for o in (i[2] if i[0] == "sync" else [i[2].object]))


def test_resumes_after_the_server_closes_the_stream(watched):
    lc, core, rec, watcher = watched
    wait_until(lambda: rec.syncs() == 1, 10, "first list")
    before = lc.metrics()["requests"].get("watch configmaps", 0)
    # timeoutSeconds=2: the server ends each watch; the watcher must go on without a relist
    wait_until(lambda: lc.metrics()["requests"].get("watch configmaps", 0) >= before + 2, 15,
               "a renewed watch")
    core.create_namespaced_config_map(NS, config_map("later"))
    wait_until(lambda: "later" in rec.names_seen(), 10, "event after renewal")
    assert rec.syncs() == 1


def test_relists_on_410_and_misses_nothing(watched):
    lc, core, rec, watcher = watched
    wait_until(lambda: rec.syncs() == 1, 10, "first list")
    lc.set_faults({"expire_watches": True})
    core.create_namespaced_config_map(NS, config_map("during"))
    wait_until(lambda: rec.syncs() >= 2, 15, "a relist after 410")
    core.create_namespaced_config_map(NS, config_map("after"))
    wait_until(lambda: rec.names_seen() == {"before", "during", "after"}, 10, "all objects")


def test_resumes_after_cut_connections_and_api_errors(watched):
    lc, core, rec, watcher = watched
    wait_until(lambda: rec.syncs() == 1, 10, "first list")
    lc.set_faults({"watch_cut_after": 1, "watch_cut_mode": "reset",
                   "error_rate": {"watch": 0.3, "list": 0.3}, "error_codes": [500, 429],
                   "seed": 7})
    for i in range(6):
        core.create_namespaced_config_map(NS, config_map(f"cm-{i}"))
    expected = {"before"} | {f"cm-{i}" for i in range(6)}
    wait_until(lambda: rec.names_seen() == expected, 30, "every object despite faults")


def test_poller_delivers_snapshots(cluster):
    lc, api = cluster
    from kubernetes import client
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(NS, config_map("one"))
    stop = threading.Event()
    rec = Recorder()
    poller = Poller(ConfigMapCluster(api, NS, 5), MINE, rec, stop, interval=0.1)
    poller.start()
    try:
        wait_until(lambda: rec.syncs() >= 4, 10, "a few polls")
        assert rec.names_seen() == {"one"}
    finally:
        stop.set()
        poller.join(5)
