"""node.workpool: tasks run on workers and deliver their results; priorities order the queue; a
full queue holds the submitter back; shutdown cancels waiting submitters and ends the workers."""
from __future__ import annotations

import threading

import pytest

from node import retry
from node.workpool import WorkPool


@pytest.fixture
def stop():
    event = threading.Event()
    yield event
    event.set()


def _pool(stop, workers=1, queue_size=100):
    delivered: list = []
    pool = WorkPool(workers, queue_size, stop, delivered.append, name="test")
    return pool, delivered


def test_tasks_deliver_what_they_return_and_none_is_not_delivered(stop):
    pool, delivered = _pool(stop, workers=2)
    pool.start()
    for i in range(20):
        pool.submit(lambda i=i: ("done", i) if i % 2 else None)
    assert pool.wait_idle(10)
    assert sorted(delivered) == [("done", i) for i in range(1, 20, 2)]
    stop.set()
    pool.join(5)


def test_lower_priority_numbers_run_first_and_equal_ones_in_order(stop):
    pool, delivered = _pool(stop)
    gate = threading.Event()
    pool.start()
    pool.submit(lambda: gate.wait(10) and None)  # holds the one worker while the rest queue
    for i in range(3):
        pool.submit(lambda i=i: ("clean", i), priority=1)
    for i in range(3):
        pool.submit(lambda i=i: ("read", i))
    gate.set()
    assert pool.wait_idle(10)
    assert delivered == [("read", 0), ("read", 1), ("read", 2),
                         ("clean", 0), ("clean", 1), ("clean", 2)]
    stop.set()
    pool.join(5)


def test_a_full_queue_holds_the_submitter_until_shutdown_cancels_it(stop):
    pool, _ = _pool(stop, queue_size=1)
    gate = threading.Event()
    pool.start()
    pool.submit(lambda: gate.wait(10) and None)
    running = threading.Event()
    pool.submit(lambda: running.set())  # waits in the queue (size 1)
    outcome: list = []

    def third():
        try:
            pool.submit(lambda: None)
            outcome.append("queued")
        except retry.Cancelled:
            outcome.append("cancelled")
    t = threading.Thread(target=third)
    t.start()
    t.join(0.5)  # not a synchronisation: the submitter must still be waiting after it
    assert t.is_alive() and outcome == []
    stop.set()
    gate.set()
    t.join(5)
    assert outcome == ["cancelled"]
    pool.join(5)
    assert all(not th.is_alive() for th in pool._threads)


def test_a_failing_task_does_not_end_its_worker(stop, caplog):
    pool, delivered = _pool(stop)
    pool.start()
    pool.submit(lambda: 1 / 0)
    pool.submit(lambda: "after")
    assert pool.wait_idle(10)
    assert delivered == ["after"]
    assert "test: a task failed" in caplog.text
    stop.set()
    pool.join(5)


def test_without_workers_tasks_run_on_the_submitting_thread(stop):
    pool, delivered = _pool(stop, workers=0)
    seen = []
    pool.submit(lambda: seen.append(threading.current_thread()) or "x", priority=1)
    assert seen == [threading.current_thread()] and delivered == ["x"]
