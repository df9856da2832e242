"""The node's heart: one thread owns all run state and handles, in order, commands from the
server, kill requests and the watchers' view of Jobs and Pods.

Being the only writer of run state makes the rules easy to check: a run is started at most once
(the ledger remembers every run id), its result is queued exactly once (the ledger's `finish` is
atomic and idempotent), and the Job is deleted only after the result is safely queued.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from node import retry
from node.cluster import Cluster, WatchEvent
from node.config import NodeConfig
from node.errors import (ClusterError, NodeError, NotFoundError, OutboxError, PayloadError,
                         RecoveryError)
from node.jobs import RUN_LABEL, JobOps
from node.ledger import ACCEPTED, CREATED, FINISHED, Ledger
from node.manifests import build_job, job_name, recovery_info
from node.models import MAX_ID, Result, StatusReport, TaskCommand, TaskStatus, parse_command
from node.live import NoLive
from node.objects import slim, slim_item
from node.proxy_address import ProxyAddress, ProxyServiceError
from node.status import WAITING_REASONS, RunState, run_status
from node.workspace import OutputTooLarge, Workspace

log = logging.getLogger(__name__)

# A pod still creating its containers after this long may be stuck on a volume; only Events
# tell (FailedMount), so they are read for such pods, at this interval.
EVENT_CHECK_INTERVAL = 1.0
STUCK_AFTER = 2.0
# A Job with no pod this long after the node saw it may have had its pod refused at admission
# (Pod Security, ResourceQuota, RuntimeClass): only the Job's Events tell (FailedCreate), so they
# are read for such runs, at most every JOB_EVENTS_EVERY seconds per run.
PODLESS_AFTER = 1.5
JOB_EVENTS_EVERY = 3.0


@dataclass
class Run:
    run_id: int
    task_id: int
    parent_id: int | None
    job: dict | None = None
    job_deleted: bool = False     # the Job vanished while the run was not finished
    pods: dict[str, dict] = field(default_factory=dict)
    status: TaskStatus | None = None
    killed: bool = False
    status_since: float = 0.0
    # False when a Job of this run's name belongs to another run or node: never delete it
    # (two nodes sharing a jobs namespace get the same name for a prototype task's run id)
    owns_job: bool = True
    job_name: str = ""
    reason: str = ""              # the Kubernetes reason behind the status last reported
    podless_since: float | None = None  # monotonic: the Job was seen with no pod since then
    job_events_read: float = 0.0  # monotonic: when the Job's events were last read



def _run_id_of(obj: dict) -> int | None:
    value = (obj.get("metadata", {}).get("labels") or {}).get(RUN_LABEL, "")
    return int(value) if value.isdigit() else None


def _no_proxy() -> ProxyAddress:
    raise ProxyServiceError("the node was started without a proxy address")


class Agent:
    def __init__(self, config: NodeConfig, cluster: Cluster, ledger: Ledger,
                 workspace: Workspace, reporter: Any, stop: threading.Event,
                 live: Any = None, proxy: Callable[[], ProxyAddress] | None = None):
        self.config = config
        # the proxy's Service as last read (node.proxy_service); raises ProxyServiceError while
        # it is unknown, and then runs are refused rather than given DNS
        self.proxy = proxy if proxy is not None else _no_proxy
        self.live = live if live is not None else NoLive()  # the live channel's hooks
        self.cluster = cluster
        self.jobs = JobOps(cluster, config, stop)
        self.ledger = ledger
        self.workspace = workspace
        self.reporter = reporter
        self.stop_event = stop
        self.runs: dict[int, Run] = {}
        self.queue: queue.Queue = queue.Queue()
        self.heartbeat = time.monotonic()
        self._synced: set[str] = set()
        # What a full disk (or any ledger write failure) held back, retried every check
        # interval instead of being dropped: a run must never be lost to ENOSPC.
        self._unstored: dict[int, Result] = {}    # results not yet in the outbox
        self._uncleaned: dict[int, Run] = {}      # their Jobs/files, removed once stored
        self._unaccepted: list[Any] = []          # commands the ledger could not record
        self._thread = threading.Thread(target=self._loop, name="agent", daemon=True)

    # -- inputs (any thread) -------------------------------------------------------------------
    def submit_command(self, raw: Any) -> None:
        self.queue.put(("command", raw))

    def kill(self, data: Any, timeout: float = 30) -> dict:
        fut: Future = Future()
        self.queue.put(("kill", data, fut))
        try:
            return fut.result(timeout=timeout)
        except Exception as e:  # the agent is stopping or stuck: answer rather than hang
            return {"error": f"kill not processed: {e}"}

    def sink(self, item: tuple) -> None:
        """For the watchers (their threads): objects are slimmed before they wait in the queue."""
        self.queue.put(slim_item(item))

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        try:
            self._recover()
        except retry.Cancelled:
            return
        next_check = time.monotonic() + EVENT_CHECK_INTERVAL
        while not self.stop_event.is_set():
            self.heartbeat = time.monotonic()
            try:
                item = self.queue.get(timeout=EVENT_CHECK_INTERVAL)
            except queue.Empty:
                item = None
            try:
                if item is not None:
                    self._handle(item)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + EVENT_CHECK_INTERVAL
                    self._check_stuck_pods()
                    self._check_podless_jobs()
                    self._recheck_waiting()
                    self._retry_held_back()
            except retry.Cancelled:
                return
            except Exception:  # one bad item must never take the node down
                log.exception("error while handling %s", item[0] if item else "periodic check")
                if item is not None and item[0] == "kill" and not item[2].done():
                    item[2].set_result({"error": "internal error"})

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        if kind == "command":
            self._on_command(item[1])
        elif kind == "kill":
            item[2].set_result(self._on_kill(item[1]))
        elif kind == "sync":
            self._on_sync(item[1], item[2])
        elif kind == "event":
            self._on_event(item[1], item[2])

    def _new_run(self, run_id: int, task_id: int, parent_id: int | None) -> Run:
        return Run(run_id, task_id, parent_id, job_name=job_name(self.config.node_id, run_id))

    # -- commands --------------------------------------------------------------------------------
    def _on_command(self, raw: Any) -> None:
        try:
            cmd = parse_command(raw, self.config)
        except PayloadError as e:
            self._reject(raw, e)
            return
        try:
            accepted = self.ledger.accept(cmd.run_id, cmd.task_id, raw)
        except OutboxError as e:
            log.error("run %s: cannot record the command (%s); will retry", cmd.run_id, e)
            self._unaccepted.append(raw)
            return
        if not accepted:
            log.info("run %s was seen before; ignoring the repeated command", cmd.run_id)
            return
        log.info("run %s (task %s): accepted, image %s", cmd.run_id, cmd.task_id, cmd.image)
        self._start(cmd)

    def _reject(self, raw: Any, e: PayloadError) -> None:
        log.warning("refused a command (run %s): %s", e.run_id, e.message)
        self.reporter.rejected(self.config.node_id, e.run_id, e.message)
        if e.run_id is None or self.ledger.get(e.run_id) is not None:
            return  # nothing to answer for, or a known run that a bad copy must not touch
        task_id = raw.get("task_id") if isinstance(raw, dict) else None
        # only a valid id: a task_id of 2**64 cannot even be stored in the ledger
        if not isinstance(task_id, int) or isinstance(task_id, bool) or not 0 < task_id < MAX_ID:
            task_id = e.run_id
        self._queue_result(Result(run_id=e.run_id, task_id=task_id, parent_id=None,
                                  status=TaskStatus(e.status).value, data="",
                                  logs=f"command refused by node {self.config.node_id}: "
                                       f"{e.message}"))

    def _start(self, cmd: TaskCommand) -> None:
        run = self._new_run(cmd.run_id, cmd.task_id, cmd.parent_id)
        self.runs[cmd.run_id] = run
        try:
            self.workspace.prepare(cmd)
            job = build_job(cmd, self.config, self.proxy())
            if not self._create_job(run, job):
                return
        except (NodeError, OSError) as e:
            self._finish(run, TaskStatus.START_FAILED, f"could not start: {e}")
            return
        self.ledger.mark_created(cmd.run_id)
        self._set_status(run, TaskStatus.PENDING, "job created")

    def _create_job(self, run: Run, job: dict) -> bool:
        """Create the run's Job, or adopt it if it exists already. False: the run is finished."""
        existing = self.jobs.create(job)
        return existing is None or self._adopt_existing(run, existing)

    def _adopt_existing(self, run: Run, job: dict) -> bool:
        """A Job of that name exists. Ours for this run (a crash between create and ledger
        update): keep it. Anything else: refuse to run, never overwrite."""
        try:
            ref = recovery_info(job)
        except (NodeError, ValueError, KeyError) as e:
            run.owns_job = False
            self._finish(run, TaskStatus.START_FAILED, f"a job named {run.job_name} exists and "
                                                      f"is not this run's: {e}")
            return False
        labels = job["metadata"].get("labels") or {}
        if ref.run_id != run.run_id or labels.get("v6.node-id") != self.config.node_id:
            run.owns_job = False
            self._finish(run, TaskStatus.START_FAILED,
                         f"a job named {run.job_name} exists and belongs to another run or node")
            return False
        run.job = slim(job)
        return True

    # -- kill ------------------------------------------------------------------------------------
    def _on_kill(self, data: Any) -> dict:
        if not isinstance(data, dict):
            return {"error": "kill_task needs an object with run_id or task_id"}
        run_id, task_id = data.get("run_id"), data.get("task_id")
        valid = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0  # noqa: E731
        if not (valid(run_id) or valid(task_id)):
            return {"error": "kill_task needs a positive integer run_id or task_id"}
        if valid(run_id):
            known = [run_id] if self.ledger.get(run_id) else []
            unknown = [] if known else [run_id]
        else:
            known = [r.run_id for r in self.ledger.runs_of_task(task_id)]
            unknown = []
        killed, not_running = [], []
        for rid in known:
            run = self.runs.get(rid)
            if run is None or not self._kill_run(run):
                not_running.append(rid)
            else:
                killed.append(rid)
        return {"killed": killed, "not_running": not_running, "unknown": unknown}

    def _kill_run(self, run: Run) -> bool:
        # the Job may have ended a moment ago with its event still queued: look first, so a
        # completed run is never reported as killed
        try:
            run.job = slim(self.cluster.get_job(run.job_name))
        except NotFoundError:
            run.job = None
        except ClusterError as e:
            log.warning("run %s: could not read its job before killing: %s", run.run_id, e)
        if run.job is not None:
            state = self._state(run, killed=False)
            if state.terminal:
                self._finish(run, state.status, state.detail)
                return False
        run.killed = True
        self._finish(run, TaskStatus.KILLED, "killed by user")
        return True

    # -- cluster view ------------------------------------------------------------------------------
    def _on_sync(self, kind: str, items: list[dict]) -> None:
        by_run: dict[int, list[dict]] = {}
        for obj in items:
            rid = _run_id_of(obj)
            if rid is not None:
                by_run.setdefault(rid, []).append(obj)
        if kind == "jobs":
            for rid, objs in by_run.items():
                self._on_object("jobs", "ADDED", objs[0])
            first = "jobs" not in self._synced
            for run in list(self.runs.values()):
                if run.run_id in by_run:
                    continue
                if run.job is not None or first:
                    # seen before (or expected from before a restart) and gone now: confirm
                    self._confirm_gone(run)
        else:
            for run in list(self.runs.values()):
                run.pods = {p["metadata"]["name"]: p for p in by_run.get(run.run_id, [])}
            for rid, objs in by_run.items():
                if rid not in self.runs:
                    self._on_object("pods", "ADDED", objs[0])
            for run in list(self.runs.values()):
                self._evaluate(run)
        self._synced.add(kind)

    def _confirm_gone(self, run: Run) -> None:
        try:
            run.job = slim(self.cluster.get_job(run.job_name))
            self._evaluate(run)
        except NotFoundError:
            run.job, run.job_deleted = None, True
            self._evaluate(run)
        except ClusterError as e:
            log.warning("run %s: could not confirm its job: %s", run.run_id, e)

    def _on_event(self, kind: str, event: WatchEvent) -> None:
        self._on_object(kind, event.type, event.object)

    def _on_object(self, kind: str, etype: str, obj: dict) -> None:
        rid = _run_id_of(obj)
        if rid is None:
            return
        run = self.runs.get(rid)
        if run is None:
            run = self._unknown_run(kind, etype, obj, rid)
            if run is None:
                return
        name = obj["metadata"]["name"]
        if kind == "jobs":
            if etype == "DELETED":
                run.job, run.job_deleted = None, True
            else:
                if run.parent_id is None and run.job is None:
                    run.parent_id = self._parent_of(obj)
                run.job = obj
        else:
            if etype == "DELETED":
                run.pods.pop(name, None)
            else:
                run.pods[name] = obj
        self._evaluate(run)

    @staticmethod
    def _parent_of(job: dict) -> int | None:
        try:
            return recovery_info(job).parent_id
        except (RecoveryError, ValueError, KeyError):
            return None

    def _unknown_run(self, kind: str, etype: str, obj: dict, rid: int) -> Run | None:
        row = self.ledger.get(rid)
        if row is not None and row.state == FINISHED:
            if kind == "jobs" and etype != "DELETED" \
                    and not obj["metadata"].get("deletionTimestamp"):
                self._delete_job(job_name(self.config.node_id, rid))  # left over from before a restart
            return None
        if kind != "jobs" or etype == "DELETED":
            return None  # pods alone cannot be adopted; their Job brings them
        try:
            ref = recovery_info(obj)
        except (RecoveryError, ValueError, KeyError) as e:
            log.error("job %s carries our labels but cannot be adopted: %s",
                      obj["metadata"]["name"], e)
            return None
        log.info("run %s: adopting its job found in the cluster", rid)
        if row is None:
            self.ledger.accept(ref.run_id, ref.task_id, None)
        self.ledger.mark_created(rid)
        run = self._new_run(ref.run_id, ref.task_id, ref.parent_id)
        self.runs[rid] = run
        return run

    def _state(self, run: Run, events: list[dict] | tuple = (),
               killed: bool | None = None) -> RunState:
        """The run's status now (node.status), with the configured unschedulable grace."""
        return run_status(None if run.job_deleted else run.job, list(run.pods.values()),
                          killed=run.killed if killed is None else killed, events=events,
                          now=datetime.now(timezone.utc),
                          unschedulable_grace_seconds=self.config.job.unschedulable_grace_seconds)

    def _evaluate(self, run: Run) -> None:
        if run.run_id not in self.runs:
            return
        for pod in run.pods.values():  # the live channel follows pods once they run
            self.live.pod_event(run.run_id, "MODIFIED", pod)
        self._decide(run)

    def _decide(self, run: Run) -> None:
        """Finish the run or report its status, from what the node knows of it now."""
        if run.job is None and not run.job_deleted:
            return  # created, not yet seen
        if run.pods or run.job is None:
            run.podless_since = None
        elif run.podless_since is None:
            run.podless_since = time.monotonic()
        state = self._state(run)
        if state.terminal and run.job is not None and self._refresh_pods(run):
            # the Job's final word came before the pods' (two watch streams): decide on the
            # pods as they are now, so a crash is not mistaken for a vanished pod
            state = self._state(run)
        if state.terminal:
            self._finish(run, state.status, state.detail)
        else:
            self._set_status(run, state.status, state.detail, state.reason)

    def _refresh_pods(self, run: Run) -> bool:
        """Read the run's pods from the API. True when that changed what the node knew."""
        try:
            pods = self.jobs.pods_of(run.run_id)
        except ClusterError as e:
            log.warning("run %s: could not read its pods: %s", run.run_id, e)
            return False
        fresh = {p["metadata"]["name"]: slim(p) for p in pods}
        changed = {n: p["metadata"].get("resourceVersion") for n, p in fresh.items()} != \
            {n: p["metadata"].get("resourceVersion") for n, p in run.pods.items()}
        run.pods = fresh
        return changed

    def _check_stuck_pods(self) -> None:
        now = time.monotonic()
        for run in list(self.runs.values()):
            if run.status != TaskStatus.INITIALIZING or run.job is None:
                continue
            if now - run.status_since < STUCK_AFTER:
                continue
            events = []
            for name, pod in run.pods.items():
                if (pod.get("status") or {}).get("phase") == "Pending":
                    try:
                        events += self.cluster.pod_events(name)
                    except ClusterError as e:
                        log.debug("events of pod %s unavailable: %s", name, e)
            if events:
                state = self._state(run, events)
                if state.terminal:
                    self._finish(run, state.status, state.detail)

    def _check_podless_jobs(self) -> None:
        """Runs whose Job has had no pod for PODLESS_AFTER: read the Job's events (FailedCreate)."""
        now = time.monotonic()
        for run in list(self.runs.values()):
            if run.job is None or run.pods or run.podless_since is None:
                continue
            if now - run.podless_since < PODLESS_AFTER or now - run.job_events_read < JOB_EVENTS_EVERY:
                continue
            run.job_events_read = now
            try:
                events = self.cluster.job_events(run.job_name)
            except ClusterError as e:
                log.debug("events of job %s unavailable: %s", run.job_name, e)
                continue
            state = self._state(run, events)
            if state.terminal:
                self._finish(run, state.status, state.detail)
            else:
                self._set_status(run, state.status, state.detail, state.reason)

    def _recheck_waiting(self) -> None:
        """Runs waiting for a reason with a time limit (an unschedulable pod's grace): evaluated
        again on the timer, as nothing in the cluster may change to wake them."""
        for run in list(self.runs.values()):
            if run.reason in WAITING_REASONS and run.run_id in self.runs:
                self._decide(run)

    # -- endings -----------------------------------------------------------------------------------
    def _set_status(self, run: Run, status: TaskStatus, detail: str, reason: str = "") -> None:
        # the same status is reported again only when it starts or stops waiting for a reason
        # worth telling (the scheduler's Unschedulable)
        news = reason != run.reason and (reason in WAITING_REASONS or run.reason in WAITING_REASONS)
        run.reason = reason
        if status == run.status and not news:
            return
        if status != run.status:
            run.status_since = time.monotonic()
        run.status = status
        log.info("run %s: %s%s", run.run_id, status.value, f" ({detail})" if detail else "")
        self.live.run_status(run.run_id, run.task_id, status.value)
        self.reporter.status(StatusReport(node_id=self.config.node_id, run_id=run.run_id,
                                          task_id=run.task_id, parent_id=run.parent_id,
                                          status=status.value, detail=detail))

    def _finish(self, run: Run, status: TaskStatus, detail: str) -> None:
        """Queue the run's one result, then remove its Job and files."""
        self.runs.pop(run.run_id, None)
        logs = self._collect_logs(run)
        try:
            data = self.workspace.read_output(run.run_id)
        except OutputTooLarge as e:
            status, detail, data = TaskStatus.FAILED, str(e), ""
        except (OSError, NodeError) as e:
            data = ""
            detail = f"{detail}; output unreadable: {e}" if detail else f"output unreadable: {e}"
        if detail:
            logs = f"{logs}\n[node] {status.value}: {detail}".lstrip("\n")
        self._set_status(run, status, detail)
        stored = self._queue_result(Result(run_id=run.run_id, task_id=run.task_id,
                                           parent_id=run.parent_id, status=status.value,
                                           data=data, logs=logs))
        self.live.run_finished(run.run_id)
        if not stored:  # keep the Job and files until the result is safe
            self._uncleaned[run.run_id] = run
            return
        self._clean_up(run)

    def _clean_up(self, run: Run) -> None:
        if not run.job_deleted and run.owns_job:
            self._delete_job(run.job_name)
        self.workspace.remove(run.run_id)

    def _queue_result(self, result: Result) -> bool:
        """True once the result is in the outbox (now or before); False: held back, retried."""
        try:
            stored = self.ledger.finish(result)
        except OutboxError as e:
            log.error("run %s: cannot store its result (%s); will retry", result.run_id, e)
            self._unstored[result.run_id] = result
            return False
        self._unstored.pop(result.run_id, None)
        if stored:
            self.reporter.kick()
        else:
            log.info("run %s already has a result; not reporting again", result.run_id)
        return True

    def _retry_held_back(self) -> None:
        for run_id, result in list(self._unstored.items()):
            if not self._queue_result(result):
                return  # still failing: try again at the next check
            run = self._uncleaned.pop(run_id, None)
            if run is not None:
                self._clean_up(run)
        commands, self._unaccepted = self._unaccepted, []
        for raw in commands:
            self._on_command(raw)

    def _collect_logs(self, run: Run) -> str:
        return self.jobs.logs(run.pods)

    def _delete_job(self, name: str) -> None:
        self.jobs.delete(name)

    # -- recovery ------------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Runs the ledger knows and that have not finished: expect their Jobs (the first sync
        confirms), or create the Job if the node stopped before it could."""
        for row in self.ledger.unfinished():
            if row.state == CREATED or row.command is None:
                self.runs[row.run_id] = self._new_run(row.run_id, row.task_id, None)
                continue
            if row.state == ACCEPTED:
                try:
                    cmd = parse_command(row.command, self.config)
                except PayloadError as e:
                    self._queue_result(Result(
                        run_id=row.run_id, task_id=row.task_id, parent_id=None,
                        status=TaskStatus.START_FAILED.value, data="",
                        logs=f"could not start after a restart: {e.message}"))
                    continue
                log.info("run %s: creating its job after a restart", row.run_id)
                self._start(cmd)
