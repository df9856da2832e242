"""Fuzzing the node's command handling: the real parse_command and Agent, a fake cluster.

Whatever arrives as a `command`, the node answers it (a Job for a valid payload, a clear refusal
otherwise), never crashes, never lets a path out of its task_dir, never shows a token, and still
runs a valid task afterwards.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.errors import PayloadError
from node.ledger import FINISHED
from node.models import MAX_ID, parse_command
from tests.reliability.harness import Harness, _event
from tests.reliability.payloads import TOKEN_MARK, payloads, prototype, rich
from tests.reliability.settings import examples, fuzz_settings, record

MAX_MESSAGE = 1000


def usable_run_id(raw) -> int | None:
    rid = raw.get("run_id") if isinstance(raw, dict) else None
    return rid if isinstance(rid, int) and not isinstance(rid, bool) and 0 < rid < MAX_ID else None


def outbox_of(h: Harness, run_id: int) -> list[dict]:
    return [json.loads(r[0]) for r in h.ledger._query("SELECT result FROM outbox WHERE run_id=?",
                                                      (run_id,))]


def under(path: str, root: Path) -> bool:
    real = os.path.realpath(path)
    return real == str(root) or real.startswith(str(root) + os.sep)


def check_one(h: Harness, raw, counts: dict) -> None:
    counts["payloads"] += 1
    rid = usable_run_id(raw)
    known_before = rid is not None and h.ledger.get(rid) is not None
    outbox_before = outbox_of(h, rid) if rid is not None else []
    jobs_before = len(h.cluster.created)
    rejections_before = len(h.reporter.rejections)
    try:
        expected = parse_command(raw, h.config)
        refusal = None
    except PayloadError as e:
        expected, refusal = None, e
    # anything else escaping parse_command fails the test right here

    h.agent._on_command(raw)  # must not raise, whatever the payload

    new_rejections = h.reporter.rejections[rejections_before:]
    new_jobs = h.cluster.created[jobs_before:]
    if refusal is not None:
        counts["refused"] += 1
        message = refusal.message
        assert isinstance(message, str) and message.strip(), "a refusal must say why"
        assert len(message) < MAX_MESSAGE, f"refusal message too long ({len(message)} chars)"
        assert TOKEN_MARK not in message
        assert refusal.status in ("failed", "not allowed")
        assert new_rejections == [(refusal.run_id, message)]
        assert not new_jobs
        if refusal.run_id is not None and not known_before:
            # a refused payload with a usable run id gets exactly one result for that run
            row = h.ledger.get(refusal.run_id)
            assert row is not None and row.state == FINISHED
            results = outbox_of(h, refusal.run_id)
            assert len(results) == 1 and results[0]["status"] == refusal.status
            assert message in results[0]["logs"]
            h.ledger.delivered(refusal.run_id)
        elif rid is not None:
            assert outbox_of(h, rid) == outbox_before  # a bad copy never touches a known run
        return
    counts["valid"] += 1
    assert not new_rejections
    if known_before:
        counts["repeats"] += 1
        assert not new_jobs  # a run id seen before is never started again
        return
    assert new_jobs == [f"v6-run-{expected.run_id}-node-a"]
    job = h.cluster.jobs[new_jobs[0]]
    run_root = Path(h.config.task_dir, "runs", str(expected.run_id))
    db_uris = {db.uri for db in h.config.databases}
    for volume in job["spec"]["template"]["spec"]["volumes"]:
        if "emptyDir" in volume:  # the live channel's scratch space, inside the pod
            continue
        path = volume["hostPath"]["path"]
        assert under(path, run_root) or path in db_uris, f"volume {path} escapes the task dir"
    assert (run_root / "task" / "token").read_text() == expected.token
    h.complete(expected.run_id, output=f"out-{expected.run_id}")
    results = outbox_of(h, expected.run_id)
    assert len(results) == 1 and results[0]["status"] == "completed"
    assert results[0]["data"] == f"out-{expected.run_id}"
    assert not run_root.exists(), "the run's files (token included) are removed"
    assert new_jobs[0] not in h.cluster.jobs, "the Job is deleted after its result is safe"
    h.ledger.delivered(expected.run_id)


def check_logs_clean(h: Harness) -> None:
    leaks = [line for line in h.log.lines if TOKEN_MARK in line or h.config.api_key in line]
    assert not leaks, f"secrets in the node's log: {leaks[:3]}"


def fresh_run_id(h: Harness) -> int:
    run_id = 4_000_000_000_000_000  # the storm may have used any id; take one it did not
    while h.ledger.get(run_id) is not None:
        run_id += 1
    return run_id


def valid_task_completes(h: Harness, run_id: int) -> None:
    payload = {"run_id": run_id, "task_id": run_id, "image": "v6-demo/avg",
               "databases": ["default"], "token": TOKEN_MARK + "final", "input": {"x": 1}}
    h.command(payload)
    h.complete(run_id, output="after the storm")
    assert outbox_of(h, run_id)[0]["status"] == "completed"
    assert outbox_of(h, run_id)[0]["data"] == "after the storm"


def test_every_payload_is_answered_and_a_valid_task_still_runs(tmp_path):
    h = Harness(tmp_path)
    counts = {"payloads": 0, "refused": 0, "valid": 0, "repeats": 0}
    n = examples(2500, 12000)

    @fuzz_settings(n, 12000)
    @given(payloads())
    def storm(raw):
        check_one(h, raw, counts)

    try:
        storm()
        check_logs_clean(h)
        assert not h.agent.runs, "every run that started also finished"
        assert not h.cluster.jobs, "no Job left behind"
        valid_task_completes(h, fresh_run_id(h))
    finally:
        h.close()
    # hypothesis may stop a little short of max_examples when it runs out of new inputs
    assert counts["payloads"] >= 0.9 * n, counts
    assert counts["refused"] > counts["payloads"] // 2 and counts["valid"] > 50, counts
    record("fuzz_node_agent", counts)


def test_prototype_and_rich_payloads_are_accepted_when_valid(tmp_path):
    """The accepting half on its own: valid payloads of both shapes always make one Job."""
    h = Harness(tmp_path)
    seen = {"payloads": 0, "refused": 0, "valid": 0, "repeats": 0}

    @fuzz_settings(examples(300, 2000), 2000)
    @given(prototype() | rich(), st.integers(1, 2**53 - 1))
    def valid(raw, run_id):
        check_one(h, {**raw, "run_id": run_id}, seen)

    try:
        valid()
        check_logs_clean(h)
    finally:
        h.close()
    assert seen["refused"] == 0, seen


def test_storm_through_the_agents_own_thread(tmp_path):
    """The same storm through the queue and the agent's thread, which must survive it."""
    h = Harness(tmp_path)
    sent = []

    @fuzz_settings(examples(40, 300), 300)
    @given(payloads())
    def collect(raw):
        sent.append(raw)

    collect()
    h.agent.start()
    try:
        for raw in sent:
            h.agent.submit_command(raw)
        final = fresh_run_id(h)
        h.agent.submit_command({"run_id": final, "task_id": 1, "image": "test/sleeper",
                                "databases": [], "token": TOKEN_MARK})
        deadline = time.monotonic() + 60
        while f"v6-run-{final}-node-a" not in h.cluster.jobs:
            assert h.agent.is_alive(), "the agent thread died"
            assert time.monotonic() < deadline, "the valid task after the storm never started"
            time.sleep(0.01)
        job = h.cluster.get_job(f"v6-run-{final}-node-a")
        job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
        h.agent.sink(("event", "jobs", _event("MODIFIED", job)))
        while not outbox_of(h, final):
            assert h.agent.is_alive(), "the agent thread died"
            assert time.monotonic() < deadline, "the valid task after the storm never finished"
            time.sleep(0.01)
        assert outbox_of(h, final)[0]["status"] == "completed"
        assert h.agent.is_alive()
        assert not [l for l in h.log.lines if "error while handling" in l], \
            "a payload reached the agent loop's last-resort handler"
    finally:
        h.stop.set()
        h.agent.join(10)
        h.close()
    check_logs_clean(h)
    record("fuzz_node_agent_thread", {"payloads": len(sent) + 1})


def test_the_ledger_survives_a_value_sqlite_cannot_store(tmp_path):
    """Found by the storm above: an int beyond 64 bits left a transaction open, and every later
    write failed with 'cannot start a transaction within a transaction'."""
    from node.errors import OutboxError
    from node.ledger import Ledger
    from node.models import Result

    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        with pytest.raises(OutboxError):
            ledger.finish(Result(run_id=1, task_id=2**64, parent_id=None, status="failed",
                                 data="", logs=""))
        assert ledger.finish(Result(run_id=2, task_id=2, parent_id=None, status="completed",
                                    data="ok", logs=""))
        assert [r["run_id"] for r in ledger.pending_results()] == [2]
    finally:
        ledger.close()
