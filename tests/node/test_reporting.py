"""The reporter treats a server's refusal of a result as final (issue 13 item 7): it reports the
run as failed with the reason and does not retry it forever."""
from __future__ import annotations

import threading

from node.errors import ServerLinkError
from node.ledger import Ledger
from node.models import Result, TaskStatus
from node.reporting import Reporter


class FakeLink:
    def __init__(self, answers):
        self.answers = list(answers)
        self.calls: list[dict] = []
        self.emitted: list[tuple[str, dict]] = []
        self.connected = threading.Event()
        self.connected.set()

    def call(self, event, data):
        self.calls.append(data)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def call_many(self, event, items, window=64):
        out = []
        for data in items:
            try:
                out.append(self.call(event, data))
            except ServerLinkError as e:
                out.append(e)
        return out

    def emit(self, event, data):
        self.emitted.append((event, data))
        return True


def _reporter(tmp_path, answers):
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.finish(Result(run_id=5, task_id=3, parent_id=None, status=TaskStatus.COMPLETED,
                         data="{}", logs=""))
    link = FakeLink(answers)
    return Reporter(link, ledger, threading.Event()), link, ledger


def test_a_refused_result_is_reported_failed_with_the_reason_and_not_retried(tmp_path):
    reporter, link, ledger = _reporter(tmp_path, [{"ok": False, "error": "run_result.data: bad"}])
    reporter._deliver_pending()
    assert ledger.outbox_size() == 0
    assert len(link.calls) == 1
    (event, data), = link.emitted
    assert event == "algorithm_status_change"
    assert data["run_id"] == 5 and data["task_id"] == 3 and data["status"] == "failed"
    assert "run_result.data: bad" in data["detail"]


def test_an_undelivered_result_stays_for_the_next_try(tmp_path):
    reporter, link, ledger = _reporter(tmp_path, [ServerLinkError("timeout")])
    reporter._deliver_pending()
    assert ledger.outbox_size() == 1 and link.emitted == []


def test_of_a_batch_the_answered_results_leave_the_outbox_and_the_unanswered_stay(tmp_path):
    reporter, link, ledger = _reporter(tmp_path, [{"ok": True}, ServerLinkError("timeout"),
                                                  {"ok": True, "duplicate": True}])
    for run_id in (6, 7):
        ledger.finish(Result(run_id=run_id, task_id=3, parent_id=None,
                             status=TaskStatus.COMPLETED, data="{}", logs=""))
    reporter._deliver_pending()
    assert [c["run_id"] for c in link.calls] == [5, 6, 7]
    assert [r["run_id"] for r in ledger.pending_results()] == [6]
    assert link.emitted == []


def test_a_stopping_reporter_ends_at_once_not_after_its_retry_wait(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    stop = threading.Event()
    link = FakeLink([])
    link.connected.clear()  # nothing to deliver: it waits out its retry interval
    reporter = Reporter(link, ledger, stop, retry_interval=120.0)
    reporter.start()
    try:
        stop.set()
        reporter.join(timeout=60)  # half the wait: only the wake-up ends it in time
        assert not reporter.is_alive()
    finally:
        stop.set()
        ledger.close()
