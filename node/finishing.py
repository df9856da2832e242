"""A run's ending, once the agent decided it ended: its one result into the outbox, then its Job
and files removed, with the slow I/O (pod list, logs, output, Job delete, file removal) done by
a pool of workers (`node.workpool`) so that a thousand runs ending at once do not queue their
API calls one after another on the agent thread.

    agent: ended → `finish`  ──pool: gather (pods, logs, output)──▶  ("gathered", [...]) on the
    agent's queue → `gathered`: status reported, results written to the ledger (one transaction
    for all waiting), reporter kicked  ──pool: Job delete, files──▶  ("cleaned", run_id) → `cleaned`

Everything but the two pool tasks runs on the agent thread, which stays the one writer of run
state and of the ledger's run states. Order rule: a run's Job and files are removed only once its
result is durably in the outbox, so a crash at any moment loses nothing and duplicates nothing: a
run not yet stored is still `created` in the ledger with its Job in the cluster, and a restarted
node ends it again (`Agent._recover`); a stored one is `finished`, and its Job, if still there,
is only removed (`remove_leftover`). A run is in `runs` from the decision until its clean-up is
done: the agent ignores cluster events for it meanwhile (it must not adopt its Job again).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from node import __version__, retry
from node.config import NodeConfig
from node.errors import ClusterError, NodeError, OutboxError
from node.jobs import JobOps
from node.ledger import Ledger
from node.manifests import job_name, node_labels
from node.pins import pin_key
from node.policy_view import PolicyView
from node.provenance import Provenance, isolation_summary
from node.provenance_run import job_image, provenance_of
from node.models import Result, TaskStatus
from node.runs import Run, refresh_pods, state_of
from node.workpool import WorkPool
from node.workspace import OutputTooLarge, Workspace

log = logging.getLogger(__name__)
CLEAN_UP = 1  # pool priority: after reading results (0), which come first


@dataclass
class Gathered:
    """What a worker read for an ended run; the agent stores it."""
    run: Run
    status: TaskStatus
    detail: str
    logs: str = ""
    data: str = ""
    provenance: Provenance | None = None

    def result(self) -> Result:
        return Result(run_id=self.run.run_id, task_id=self.run.task_id,
                      parent_id=self.run.parent_id, status=self.status.value, data=self.data,
                      logs=self.logs,
                      provenance=self.provenance.to_dict() if self.provenance else None)


class Finishing:
    def __init__(self, config: NodeConfig, jobs: JobOps, workspace: Workspace, ledger: Ledger,
                 reporter: Any, live: Any, pool: WorkPool,
                 set_status: Callable[[Run, TaskStatus, str], None],
                 policies: PolicyView | None = None):
        self.config = config
        self.policies = policies
        self.jobs, self.workspace, self.ledger = jobs, workspace, ledger
        self.reporter, self.live, self.pool = reporter, live, pool
        self.set_status = set_status
        self.runs: dict[int, Run] = {}  # ended, not yet cleaned up
        # What a full disk (or any ledger write failure) held back, retried every check
        # interval instead of being dropped: a run must never be lost to ENOSPC.
        self.unstored: dict[int, Result] = {}    # results not yet in the outbox
        self.uncleaned: dict[int, Run] = {}      # their Jobs/files, removed once stored

    def __contains__(self, run_id: int) -> bool:
        return run_id in self.runs

    # -- agent thread ----------------------------------------------------------------------------
    def finish(self, run: Run, status: TaskStatus, detail: str, refresh: bool = False) -> None:
        """The run ended (the agent no longer holds it). `refresh`: its end follows from the Job
        alone, so its pods are read again first (the Job's final word can come before the pods'
        over the two watch streams; the fresh pods tell a crash from a vanished pod)."""
        self.runs[run.run_id] = run
        self.pool.submit(lambda: ("gathered", [self._gather(run, status, detail, refresh)]))

    def gathered(self, items: list[Gathered]) -> None:
        """Results read by the workers, in the order they came: report, store, then clean up."""
        for g in items:
            self.set_status(g.run, g.status, g.detail)
        stored = self._store([g.result() for g in items])
        for g, ok in zip(items, stored):
            self.live.run_finished(g.run.run_id)
            if ok:
                self._clean_up(g.run)
            else:  # keep the Job and files until the result is safe
                self.uncleaned[g.run.run_id] = g.run

    def cleaned(self, run_id: int) -> None:
        self.runs.pop(run_id, None)

    def store(self, result: Result) -> bool:
        """Queue one result (no Job, no files: a refused command, a bad recovered one)."""
        return self._store([result])[0]

    def retry_held_back(self) -> None:
        for run_id, result in list(self.unstored.items()):
            if not self.store(result):
                return  # still failing: try again at the next check
            run = self.uncleaned.pop(run_id, None)
            if run is not None:
                self._clean_up(run)

    def remove_leftover(self, run_id: int) -> None:
        """The Job of a run whose result is stored already (left by a node stopped before it
        could remove it): remove it and the run's files."""
        if run_id in self.runs:
            return  # being removed
        run = Run(run_id, 0, None, job_name=job_name(self.config.node_id, run_id))
        self.runs[run_id] = run
        self._clean_up(run)

    def _store(self, results: list[Result]) -> list[bool]:
        """Per result: True once it is in the outbox (now or before); False: held back."""
        try:
            fresh = self.ledger.finish_many(results)
        except OutboxError as e:
            for r in results:
                log.error("run %s: cannot store its result (%s); will retry", r.run_id, e)
                self.unstored[r.run_id] = r
            return [False] * len(results)
        for r, new in zip(results, fresh):
            self.unstored.pop(r.run_id, None)
            if not new:
                log.info("run %s already has a result; not reporting again", r.run_id)
        if any(fresh):
            self.reporter.kick()
        return [True] * len(results)

    def _clean_up(self, run: Run) -> None:
        self.pool.submit(lambda: self._remove(run), priority=CLEAN_UP)

    # -- workers (read the run, never the agent's state) ------------------------------------------
    def _gather(self, run: Run, status: TaskStatus, detail: str, refresh: bool) -> Gathered:
        try:
            if refresh and refresh_pods(run, self.jobs.pods_of):
                state = state_of(run, self.config)
                if state.terminal:  # always, for an end that follows from the Job
                    status, detail = state.status, state.detail
            logs = self.jobs.logs(run.pods)
            try:
                data = self.workspace.read_output(run.run_id)
            except OutputTooLarge as e:
                status, detail, data = TaskStatus.FAILED, str(e), ""
            except (OSError, NodeError) as e:
                data = ""
                detail = f"{detail}; output unreadable: {e}" if detail else f"output unreadable: {e}"
        except retry.Cancelled:
            raise
        except Exception as e:  # a bug here must still end the run, with what is known
            log.exception("run %s: could not read its logs and output", run.run_id)
            logs, data = "", ""
            detail = f"{detail}; node error: {type(e).__name__}" if detail else \
                f"node error: {type(e).__name__}"
        prov = self._provenance(run)
        if prov.isolation_failed:
            what = f"isolation probe failed: {isolation_summary(prov.isolation)}"
            logs = f"{logs}\n[node] {what}".lstrip("\n")
            if self.config.live.on_isolation_failure == "fail" and status != TaskStatus.NOT_ALLOWED:
                status, detail, data = TaskStatus.FAILED, f"{what}; output withheld", ""
        if status == TaskStatus.NOT_ALLOWED:
            data = ""  # a refused run's output never leaves the node
        if detail:
            logs = f"{logs}\n[node] {status.value}: {detail}".lstrip("\n")
        return Gathered(run, status, detail, logs, data, prov)

    def _provenance(self, run: Run) -> Provenance:
        """Never raises: a piece the node cannot tell is None ("not available")."""
        try:
            policies = run.policies
            if policies is None and self.policies is not None:
                # adopted after a restart: the policies selecting its pods now
                labels = node_labels(self.config.node_id)
                policies = self.policies.selecting(labels)
            pin = None
            if self.config.images.digest == "pin":
                key = pin_key(run.image or job_image(run.job))
                found = self.ledger.pin_of(key) if key else None
                pin = found.digest if found else None
            try:
                facts = self.live.facts(run.run_id)
            except Exception:  # the rest of the record still stands; the probe is "not run"
                log.exception("run %s: could not read its sidecar's facts", run.run_id)
                facts = None
            return provenance_of(run, self.config, policies, facts, pin)
        except Exception:  # a bug here must not lose the result
            log.exception("run %s: could not assemble its provenance", run.run_id)
            return Provenance(node_id=self.config.node_id, node_version=__version__,
                              image=run.image)

    def _remove(self, run: Run) -> tuple:
        try:
            if not run.job_deleted and run.owns_job:
                self.jobs.delete(run.job_name)
            self.workspace.remove(run.run_id)
        except retry.Cancelled:
            raise  # shutdown: the Job stays; a restarted node removes it (remove_leftover)
        except (ClusterError, OSError) as e:
            log.warning("run %s: clean-up incomplete: %s", run.run_id, e)
        return ("cleaned", run.run_id)
