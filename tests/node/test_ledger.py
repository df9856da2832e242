import os
import stat

import pytest

from node.errors import OutboxError
from node.ledger import ACCEPTED, CREATED, FINISHED, Ledger
from node.models import Result, TaskStatus


def result(run_id, status=TaskStatus.COMPLETED, data="42"):
    return Result(run_id=run_id, task_id=run_id * 10, parent_id=None, status=status, data=data,
                  logs="log")


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "ledger.sqlite")
    yield led
    led.close()


def test_a_run_id_is_accepted_once(ledger):
    assert ledger.accept(1, 10, {"run_id": 1}) is True
    assert ledger.accept(1, 10, {"run_id": 1, "other": True}) is False
    row = ledger.get(1)
    assert row.state == ACCEPTED and row.command == {"run_id": 1}


def test_created_runs_forget_their_command(ledger):
    ledger.accept(1, 10, {"token": "secret"})
    ledger.mark_created(1)
    row = ledger.get(1)
    assert row.state == CREATED and row.command is None


def test_finish_queues_exactly_one_result(ledger):
    ledger.accept(1, 10, {})
    assert ledger.finish(result(1)) is True
    assert ledger.finish(result(1, TaskStatus.KILLED)) is False
    pending = ledger.pending_results()
    assert [r["status"] for r in pending] == ["completed"]
    assert ledger.get(1).state == FINISHED
    assert ledger.unfinished() == []


def test_finish_of_a_run_never_accepted_records_it(ledger):
    assert ledger.finish(result(7, TaskStatus.NOT_ALLOWED)) is True
    assert ledger.get(7).state == FINISHED
    assert ledger.accept(7, 70, {}) is False  # a later copy of the command is not started


def test_outbox_survives_a_restart_and_empties_on_delivery(tmp_path):
    path = tmp_path / "ledger.sqlite"
    first = Ledger(path)
    first.accept(1, 10, {})
    first.accept(2, 20, {})
    first.mark_created(2)
    first.finish(result(1))
    first.close()

    second = Ledger(path)
    try:
        assert [r["run_id"] for r in second.pending_results()] == [1]
        assert [r.run_id for r in second.unfinished()] == [2]
        second.delivered(1)
        assert second.pending_results() == [] and second.outbox_size() == 0
    finally:
        second.close()


def test_ledger_file_is_private(tmp_path, ledger):
    mode = stat.S_IMODE(os.stat(tmp_path / "ledger.sqlite").st_mode)
    assert mode == 0o600


def test_runs_of_task(ledger):
    ledger.accept(1, 10, {})
    ledger.accept(2, 10, {})
    ledger.accept(3, 30, {})
    assert sorted(r.run_id for r in ledger.runs_of_task(10)) == [1, 2]


def test_an_unwritable_location_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutboxError, match="ledger"):
        Ledger(blocker / "ledger.sqlite")


# -- several results in one transaction -------------------------------------------------------

def test_finish_many_stores_each_once_and_names_those_finished_before(ledger):
    for run_id in (1, 2, 3):
        ledger.accept(run_id, run_id * 10, {})
    assert ledger.finish(result(2, data="first")) is True
    # run 2 already has its result; run 3 comes twice in the batch: only its first counts
    done = ledger.finish_many([result(1), result(2, data="second"), result(3, data="a"),
                               result(3, TaskStatus.KILLED, data="b"), result(4)])
    assert done == [True, False, True, False, True]
    stored = {r["run_id"]: r for r in ledger.pending_results()}
    assert sorted(stored) == [1, 2, 3, 4]
    assert (stored[2]["data"], stored[3]["data"], stored[3]["status"]) == ("first", "a", "completed")
    assert ledger.unfinished() == []
    assert ledger.finish_many([]) == []


def test_a_failing_batch_stores_none_of_it_and_the_ledger_stays_usable(ledger):
    ledger.accept(1, 10, {})
    bad = Result(run_id=3, task_id=2**64, parent_id=None, status="failed", data="", logs="")
    with pytest.raises(OutboxError, match=r"3 runs \(1, 2, 3\)"):
        ledger.finish_many([result(1), result(2), bad])
    assert ledger.pending_results() == []
    assert ledger.get(1).state == ACCEPTED and ledger.get(2) is None
    assert ledger.finish_many([result(1), result(2)]) == [True, True]
