"""Group commit: many results in one transaction, each all-or-nothing, acknowledged after commit."""
import asyncio
import itertools
import sqlite3

import pytest

from dummy_server.group_commit import GroupCommit
from dummy_server.store import Store


@pytest.fixture
def path(tmp_path):
    return tmp_path / "s.sqlite"


@pytest.fixture
def store(path):
    clock = itertools.count(1000)
    s = Store(path, clock=lambda: next(clock))
    yield s
    s.close()


def _runs(store, n):
    _, runs = store.create_rich_task(parent_id=None, name=None, image="img", owner="alice",
                                     spec={"image": "img"}, nodes=[f"node-{i}" for i in range(n)])
    return [store.run_of_node(r["id"], r["node_id"])["pk"] for r in runs]


def _stored(path):
    """What another connection (a restarted server) finds on disk."""
    db = sqlite3.connect(str(path))
    try:
        return {pk for (pk,) in db.execute("SELECT pk FROM runs WHERE result IS NOT NULL")}
    finally:
        db.close()


def test_a_group_is_on_disk_all_at_once_at_its_end(store, path):
    pks = _runs(store, 3)
    with store.group():
        for pk in pks:
            assert store.store_result(pk, "completed", pk, "")
        assert _stored(path) == set()
        assert store.run_of_node(pks[0], "node-0")["result"]["data"] == pks[0]  # own writes seen
    assert _stored(path) == set(pks)


def test_a_failed_write_in_a_group_undoes_only_itself(store, path):
    pks = _runs(store, 3)
    with store.group():
        assert store.store_result(pks[0], "completed", 1, "")
        with pytest.raises(RuntimeError):
            with store.group():
                store.store_result(pks[1], "completed", 2, "")
                raise RuntimeError("after its write")
        assert store.store_result(pks[2], "completed", 3, "")
    assert _stored(path) == {pks[0], pks[2]}
    assert [h["status"] for h in store.history(pks[1])] == ["pending"]


def test_a_group_that_raises_stores_nothing(store, path):
    pks = _runs(store, 2)
    with pytest.raises(RuntimeError):
        with store.group():
            store.store_result(pks[0], "completed", 1, "")
            raise RuntimeError("boom")
    assert _stored(path) == set()
    assert store.store_result(pks[0], "completed", 1, "")  # and the store still works
    assert _stored(path) == {pks[0]}


def test_writes_queued_in_one_turn_commit_together_and_answer_after(store, path):
    pks = _runs(store, 50)
    commits = GroupCommit(store)

    def write(pk):
        if pk == pks[7]:
            store.store_result(pk, "completed", "half", "")
            raise RuntimeError("refused after writing")
        return store.store_result(pk, "completed", pk, "")

    async def main():
        seen_on_disk = []

        async def one(pk):
            try:
                value = await commits.run(lambda: write(pk))
            except RuntimeError as e:
                return str(e)
            seen_on_disk.append(pk in _stored(path))  # answered only once it is on disk
            return value

        return await asyncio.gather(*(one(pk) for pk in pks)), seen_on_disk

    answers, seen_on_disk = asyncio.run(main())
    assert answers == [True] * 7 + ["refused after writing"] + [True] * 42
    assert seen_on_disk == [True] * 49
    assert (commits.groups, commits.largest) == (1, 50)
    assert _stored(path) == set(pks) - {pks[7]}


def test_a_failed_commit_answers_every_write_of_the_group_with_its_error(store, path):
    pks = _runs(store, 3)
    commits = GroupCommit(store)
    store._db.execute("PRAGMA query_only = ON")  # every write now fails, the commit too

    async def main():
        return await asyncio.gather(
            *(commits.run(lambda pk=pk: store.store_result(pk, "completed", 1, "")) for pk in pks),
            return_exceptions=True)

    answers = asyncio.run(main())
    assert all(isinstance(a, sqlite3.Error) for a in answers), answers
    store._db.execute("PRAGMA query_only = OFF")
    assert _stored(path) == set()
    assert not store._db.in_transaction


def test_a_busy_server_groups_writes_that_arrive_in_separate_turns(store, path):
    pks = _runs(store, 4)
    commits = GroupCommit(store, window=60.0)  # "busy" for a minute after each commit

    async def main():
        await commits.run(lambda: store.store_result(pks[0], "completed", 0, ""))  # idle: at once
        assert (commits.groups, commits.largest) == (1, 1)
        waiting = []
        for pk in pks[1:]:  # one per turn of the loop, as Socket.IO hands them over
            waiting.append(asyncio.ensure_future(
                commits.run(lambda pk=pk: store.store_result(pk, "completed", pk, ""))))
            await asyncio.sleep(0)
        assert commits.groups == 1 and _stored(path) == {pks[0]}  # the window holds them
        commits._flush()  # the window's end, without waiting a minute
        return await asyncio.gather(*waiting)

    assert asyncio.run(main()) == [True] * 3
    assert (commits.groups, commits.writes, commits.largest) == (2, 4, 3)
    assert _stored(path) == set(pks)
