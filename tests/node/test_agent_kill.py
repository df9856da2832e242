"""Kill requests as the agent answers them: running runs are killed once, finished and unknown
runs are named as such, and a run that just completed is never reported as killed."""
from __future__ import annotations

import pytest

from tests.reliability.harness import Harness, _event


def rich(run_id: int, task_id: int = 7) -> dict:
    return {"run_id": run_id, "task_id": task_id, "image": "v6-demo/avg", "databases": [],
            "token": "t0ken-for-tests", "input": {"method": "avg"}}


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def kill(h, data) -> dict:
    from concurrent.futures import Future
    fut: Future = Future()
    h.agent._handle(("kill", data, fut))
    return fut.result(timeout=5)


def test_killing_a_running_run_reports_killed_once_and_deletes_its_job(h):
    h.command(rich(1))
    job = h.cluster.get_job("v6-run-1-node-a")
    h.agent._handle(("event", "jobs", _event("ADDED", job)))
    assert kill(h, {"run_id": 1}) == {"killed": [1], "not_running": [], "unknown": []}
    assert h.results()[1]["status"] == "killed by user"
    assert "v6-run-1-node-a" not in h.cluster.jobs
    assert kill(h, {"run_id": 1}) == {"killed": [], "not_running": [1], "unknown": []}
    assert len(h.results()) == 1


def test_killing_a_finished_run_is_a_no_op_with_a_clear_answer(h):
    h.command(rich(2))
    h.complete(2, output="done")
    assert kill(h, {"task_id": 7}) == {"killed": [], "not_running": [2], "unknown": []}
    assert h.results()[2]["status"] == "completed"
    assert h.results()[2]["data"] == "done"


def test_a_completion_not_yet_seen_wins_over_the_kill(h):
    h.command(rich(3))
    job = h.cluster.get_job("v6-run-3-node-a")
    h.agent._handle(("event", "jobs", _event("ADDED", job)))
    # the Job completed, but its event has not reached the agent yet
    job["status"] = {"succeeded": 1, "conditions": [
        {"type": "Complete", "status": "True", "reason": "Completed"}]}
    h.cluster.jobs["v6-run-3-node-a"] = job
    assert kill(h, {"run_id": 3}) == {"killed": [], "not_running": [3], "unknown": []}
    assert h.results()[3]["status"] == "completed"


def test_unknown_runs_and_bad_requests(h):
    assert kill(h, {"run_id": 99}) == {"killed": [], "not_running": [], "unknown": [99]}
    assert "error" in kill(h, {"run_id": "1; rm -rf /"})
    assert "error" in kill(h, ["not", "an", "object"])
    assert "error" in kill(h, {"task_id": True})
