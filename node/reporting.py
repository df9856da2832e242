"""Sending what happened to the server: status changes as they happen (best effort) and results
from the durable outbox until the server acknowledges each one."""
from __future__ import annotations

import logging
import threading

from node.errors import OutboxError, ServerLinkError
from node.ledger import Ledger
from node.models import StatusReport
from node.server_link import ServerLink

log = logging.getLogger(__name__)
# results read from the outbox at a time, pipelined by ServerLink.call_many and marked delivered
# together: also the most a node that dies meanwhile sends twice (the server answers "duplicate")
BATCH = 64


class Reporter(threading.Thread):
    def __init__(self, link: ServerLink, ledger: Ledger, stop: threading.Event,
                 retry_interval: float = 5.0):
        super().__init__(name="reporter", daemon=True)
        self.link, self.ledger = link, ledger
        self.stop_event = stop
        self.retry_interval = retry_interval
        self._kick = threading.Event()

    def status(self, report: StatusReport) -> None:
        if not self.link.emit("algorithm_status_change", report.to_dict()):
            log.debug("status %s of run %s not sent: server not connected",
                      report.status, report.run_id)

    def rejected(self, node_id: str, run_id: int | None, error: str) -> None:
        self.link.emit("command_rejected", {"node_id": node_id, "run_id": run_id, "error": error})

    def kick(self) -> None:
        """A new result is waiting, or the server is back: deliver now."""
        self._kick.set()

    def join(self, timeout: float | None = None) -> None:
        """After the stop event: woken at once, not at the end of its retry wait (a node took
        retry_interval to stop)."""
        self._kick.set()
        super().join(timeout)

    def run(self) -> None:
        while not self.stop_event.is_set():
            self._kick.wait(self.retry_interval)
            self._kick.clear()
            if self.stop_event.is_set() or not self.link.connected.is_set():
                continue
            try:
                self._deliver_pending()
            except OutboxError as e:
                log.error("outbox unreadable: %s", e)

    def _deliver_pending(self) -> None:
        while not self.stop_event.is_set():
            batch = self.ledger.pending_results(limit=BATCH)
            if not batch:
                return
            try:
                acks = self.link.call_many("run_result", batch, window=BATCH)
            except ServerLinkError as e:
                log.warning("%d results not delivered yet: %s", len(batch), e)
                return
            done, failed = [], False
            for result, ack in zip(batch, acks):
                if isinstance(ack, ServerLinkError):
                    log.warning("result of run %s not delivered yet: %s", result["run_id"], ack)
                    failed = True
                    continue
                self._answered(result, ack)
                done.append(result["run_id"])
            self.ledger.delivered_many(done)
            if failed:
                return  # the rest waits for the next kick or retry_interval

    def _answered(self, result: dict, ack) -> None:
        if not isinstance(ack, dict) or not ack.get("ok"):
            # the server refused it for good (unknown run): keeping it would block the
            # outbox forever; it stays in the log for the operator
            reason = str(ack.get("error") if isinstance(ack, dict) else ack)[:500]
            log.error("server refused the result of run %s: %s", result["run_id"], reason)
            # a refusal is final: tell the server the run failed and why (best effort,
            # refused too if the run is unknown) instead of retrying it forever
            self.link.emit("algorithm_status_change", {
                "run_id": result["run_id"], "task_id": result.get("task_id"),
                "parent_id": result.get("parent_id"), "status": "failed",
                "detail": f"result refused by the server: {reason}"})
        elif ack.get("duplicate"):
            log.info("result of run %s was already stored at the server", result["run_id"])
        else:
            log.info("result of run %s delivered (%s)", result["run_id"], result["status"])
