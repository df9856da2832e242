import itertools

import pytest

from dummy_server.store import Store


@pytest.fixture
def store(tmp_path):
    clock = itertools.count(1000)
    s = Store(tmp_path / "s.sqlite", clock=lambda: next(clock))
    yield s
    s.close()


def _rich(store, nodes=("node-a", "node-b")):
    return store.create_rich_task(parent_id=None, name=None, image="img", owner="alice",
                                  spec={"image": "img"}, nodes=list(nodes))


def test_rich_runs_get_unique_ids_equal_to_their_key(store):
    _, runs1 = _rich(store)
    _, runs2 = _rich(store)
    ids = [r["id"] for r in runs1 + runs2]
    assert len(set(ids)) == 4
    for run in runs1 + runs2:
        assert store.run_of_node(run["id"], run["node_id"])["pk"] == run["id"]


def test_result_is_stored_once(store):
    _, runs = _rich(store, ["node-a"])
    run = store.run_of_node(runs[0]["id"], "node-a")
    assert store.store_result(run["pk"], "completed", "42", "log")
    assert not store.store_result(run["pk"], "failed", "other", "other log")
    again = store.run_of_node(runs[0]["id"], "node-a")
    assert again["result"] == {"data": "42", "logs": "log", "status": "completed"}
    assert again["status"] == "completed"
    assert [h["status"] for h in store.history(run["pk"])] == ["pending", "completed"]


def test_terminal_status_is_never_overwritten(store):
    _, runs = _rich(store, ["node-a"])
    pk = store.run_of_node(runs[0]["id"], "node-a")["pk"]
    assert store.set_status(pk, "active", None)
    assert store.set_status(pk, "completed", None)
    assert not store.set_status(pk, "killed by user", "too late")
    assert store.run_of_node(runs[0]["id"], "node-a")["status"] == "completed"
    assert [h["status"] for h in store.history(pk)] == ["pending", "active", "completed"]


def test_legacy_task_shares_its_run_id_and_refuses_reuse(store):
    assert store.create_legacy_task(run_id=500, image="img", owner="alice", spec={"run_id": 500},
                                    nodes=["node-a", "node-b"])
    assert [r["node_id"] for r in store.runs_by_id(500)] == ["node-a", "node-b"]
    assert not store.create_legacy_task(run_id=500, image="img", owner="alice",
                                        spec={"run_id": 500}, nodes=["node-a"])
    # later rich ids stay clear of the legacy id
    task_id, runs = _rich(store)
    assert task_id > 500 and all(r["id"] > 500 for r in runs)


def test_legacy_id_colliding_with_a_rich_run_is_refused(store):
    _, runs = _rich(store, ["node-a"])
    assert not store.create_legacy_task(run_id=runs[0]["id"], image="img", owner="alice",
                                         spec={}, nodes=["node-b"])


def test_state_survives_reopening(tmp_path):
    s = Store(tmp_path / "x.sqlite")
    task_id, runs = _rich(s, ["node-a"])
    s.node_seen("node-a", online=True)
    s.store_result(runs[0]["id"], "completed", {"mean": 3}, "")
    s.close()
    s = Store(tmp_path / "x.sqlite")
    try:
        assert s.task(task_id)["owner"] == "alice"
        assert s.runs_of_task(task_id)[0]["result"]["data"] == {"mean": 3}
        assert s.nodes()["node-a"]["online"] is False  # nobody is connected after a restart
    finally:
        s.close()
