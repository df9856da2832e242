"""The node's heart: one thread owns all run state and handles, in order, commands from the
server, kill requests and the watchers' view of Jobs and Pods.

Being the only writer of run state makes the rules easy to check: a run is started at most once
(the ledger remembers every run id), its result is queued exactly once (the ledger's `finish` is
atomic and idempotent), and the Job is deleted only after the result is safely queued. The slow
I/O of a run's ending is done by a pool of workers (`node.finishing`), which only read and hand
what they read back through the queue.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

from node import retry
from node.cluster import Cluster, WatchEvent
from node.config import NodeConfig
from node.errors import (ClusterError, NodeError, NotFoundError, OutboxError, PayloadError,
                         RecoveryError)
from node.finishing import Finishing
from node.jobs import JobOps
from node.ledger import ACCEPTED, CREATED, FINISHED, Ledger
from node import pins
from node.manifests import CONTAINER_NAME, build_job, job_name, recovery_info
from node.models import MAX_ID, Result, StatusReport, TaskCommand, TaskStatus, parse_command
from node.live import NoLive
from node.objects import JOB_FACTS, slim, slim_item
from node.pins import pin_key
from node.policy_view import PolicyView
from node.provenance import container_facts, image_digest
from node.proxy_address import ProxyAddress, ProxyServiceError
from node.runs import Run, ended_by_job, refresh_pods, run_id_of, state_of
from node.status import WAITING_REASONS, RunState
from node.workpool import WorkPool
from node.workspace import Workspace

log = logging.getLogger(__name__)

# A pod still creating its containers after this long may be stuck on a volume; only Events
# tell (FailedMount), so they are read for such pods, at most every POD_EVENTS_EVERY seconds.
EVENT_CHECK_INTERVAL = 1.0
STUCK_AFTER = 2.0
POD_EVENTS_EVERY = 2.0
# A Job with no pod this long after the node saw it may have had its pod refused at admission
# (Pod Security, ResourceQuota, RuntimeClass): only the Job's Events tell (FailedCreate), so they
# are read for such runs, at most every JOB_EVENTS_EVERY seconds per run.
PODLESS_AFTER = 1.5
JOB_EVENTS_EVERY = 3.0
# Event reads started per check, for all runs together, those read longest ago first. Listing
# events is costly for an API server; with a read per waiting run and second, 1,000 pods starting
# at once (all "stuck" for a while) made ~25 event lists a second, which slowed the cluster so
# that the pods looked stuck longer and no run finished for minutes (on the local stand-in, with
# or without the pool).
EVENT_READS_PER_CHECK = 8
# Results waiting on the queue are written to the ledger together, up to this many at a time.
STORE_BATCH = 200


def _no_proxy() -> ProxyAddress:
    raise ProxyServiceError("the node was started without a proxy address")


class Agent:
    def __init__(self, config: NodeConfig, cluster: Cluster, ledger: Ledger,
                 workspace: Workspace, reporter: Any, stop: threading.Event,
                 live: Any = None, proxy: Callable[[], ProxyAddress] | None = None,
                 policies: PolicyView | None = None):
        self.config = config
        # the jobs namespace's NetworkPolicies (watched), for each run's provenance
        self.policies = policies
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
        self._unaccepted: list[Any] = []          # commands the ledger could not record
        self._held: tuple | None = None           # taken from the queue, handled next
        f = config.finishing
        # the workers hand what they read back through the queue; with none, all runs here
        self.pool = WorkPool(f.workers, f.queue_size, stop,
                             self.queue.put if f.workers else self._handle, name="finishing")
        self.finishing = Finishing(config, self.jobs, workspace, ledger, reporter, self.live,
                                   self.pool, self._set_status, policies)
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
        self.pool.start()
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
        self.pool.join(timeout)

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
            item = self._next()
            try:
                if item is not None:
                    self._handle(item)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + EVENT_CHECK_INTERVAL
                    self._check_events()
                    self._recheck_waiting()
                    self._retry_held_back()
            except retry.Cancelled:
                return
            except Exception:  # one bad item must never take the node down
                log.exception("error while handling %s", item[0] if item else "periodic check")
                if item is not None and item[0] == "kill" and not item[2].done():
                    item[2].set_result({"error": "internal error"})

    def _next(self) -> tuple | None:
        """The next item; results waiting one after another come as one, to be stored in one
        ledger transaction (taking them together keeps the queue's order)."""
        item, self._held = self._held, None
        if item is None:
            try:
                item = self.queue.get(timeout=EVENT_CHECK_INTERVAL)
            except queue.Empty:
                return None
        if item[0] != "gathered":
            return item
        batch = list(item[1])
        while len(batch) < STORE_BATCH:
            try:
                following = self.queue.get_nowait()
            except queue.Empty:
                break
            if following[0] != "gathered":
                self._held = following
                break
            batch += following[1]
        return ("gathered", batch)

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
        elif kind == "gathered":
            self.finishing.gathered(item[1])
        elif kind == "cleaned":
            self.finishing.cleaned(item[1])
        elif kind == "events":
            self._on_events(*item[1:])

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
        self.finishing.store(Result(run_id=e.run_id, task_id=task_id, parent_id=None,
                                  status=TaskStatus(e.status).value, data="",
                                  logs=f"command refused by node {self.config.node_id}: "
                                       f"{e.message}"))

    def _start(self, cmd: TaskCommand) -> None:
        run = self._new_run(cmd.run_id, cmd.task_id, cmd.parent_id)
        run.image = cmd.image
        self.runs[cmd.run_id] = run
        try:
            self.workspace.prepare(cmd)
            job = build_job(cmd, self.config, self.proxy())
            if not self._create_job(run, job):
                return
            if self.policies is not None:  # as the pod is created: its provenance (CONTRACTS §2)
                run.policies = self.policies.selecting(job["spec"]["template"]["metadata"]["labels"])
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
            rid = run_id_of(obj)
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
        rid = run_id_of(obj)
        if rid is None or rid in self.finishing:
            return  # ended: its ending has the run now, later news cannot change it
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
                self.finishing.remove_leftover(rid)  # left over from before a restart
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
        return state_of(run, self.config, events, killed)

    def _evaluate(self, run: Run) -> None:
        if run.run_id not in self.runs:
            return
        for pod in run.pods.values():  # the live channel follows pods once they run
            self.live.pod_event(run.run_id, "MODIFIED", pod)
        if self.config.images.digest == "pin" and not run.pin_checked and self._refused_by_pin(run):
            return
        self._decide(run)

    def _refused_by_pin(self, run: Run) -> bool:
        """images.digest pin (node.pins): pin the image's tag on its first run, refuse a run of
        it with another digest. True: the run was refused (and is ending)."""
        image = run.image or ((run.job or {}).get(JOB_FACTS) or {}).get("image") or ""
        key = pin_key(image) if image else None
        if key is None:
            run.pin_checked = bool(image)  # a digest reference names its content already
            return False
        facts = container_facts(run.pods.values(), CONTAINER_NAME)
        if facts.image_id is None:
            return False  # the container does not exist yet
        digest = image_digest(facts.image_id)
        if digest is None:
            run.pin_checked = True
            self._refuse(run, pins.no_digest(image, facts.image_id))
            return True
        try:
            pin = self.ledger.pin(key, digest, run.run_id)
        except OutboxError as e:
            log.error("run %s: cannot read or record the pin of %s (%s); will retry", run.run_id,
                      key, e)
            return False
        run.pin_checked = True
        if pin.digest == digest:
            if pin.run_id == run.run_id:
                log.info("run %s: pinned %s to %s", run.run_id, key, digest)
            return False
        self._refuse(run, pins.mismatch(image, pin.digest, pin.run_id, digest))
        return True

    def _refuse(self, run: Run, message: str) -> None:
        log.warning("run %s: refused: %s", run.run_id, message)
        self._finish(run, TaskStatus.NOT_ALLOWED, message)

    def _decide(self, run: Run) -> None:
        """Finish the run or report its status, from what the node knows of it now."""
        if run.job is None and not run.job_deleted:
            return  # created, not yet seen
        if run.pods or run.job is None:
            run.podless_since = None
        elif run.podless_since is None:
            run.podless_since = time.monotonic()
        state = self._state(run)
        # the Job's final word can come before the pods' (two watch streams): the pods as they
        # are now tell a crash from a vanished pod. An end that follows from the Job stays an
        # end whatever they say, so they are read by the pool; one the pods decided (a start
        # error) is checked here, as fresher pods could undo it.
        by_job = state.terminal and run.job is not None and ended_by_job(run)
        if state.terminal and run.job is not None and not by_job \
                and refresh_pods(run, self.jobs.pods_of):
            state = self._state(run)
        if state.terminal:
            self._finish(run, state.status, state.detail, refresh=by_job)
        else:
            self._set_status(run, state.status, state.detail, state.reason)

    def _check_events(self) -> None:
        """Read the events of runs that may be stuck: pods still creating their containers
        (FailedMount), Jobs without a pod (FailedCreate); at most EVENT_READS_PER_CHECK."""
        now = time.monotonic()
        due: list[tuple[float, Run, str, list[str]]] = []
        for run in self.runs.values():
            if run.job is None or run.events_reading:
                continue
            if run.status == TaskStatus.INITIALIZING and now - run.status_since >= STUCK_AFTER \
                    and now - run.pod_events_read >= POD_EVENTS_EVERY:
                pending = [name for name, pod in run.pods.items()
                           if (pod.get("status") or {}).get("phase") == "Pending"]
                if pending:
                    due.append((run.pod_events_read, run, "pods", pending))
            elif not run.pods and run.podless_since is not None \
                    and now - run.podless_since >= PODLESS_AFTER \
                    and now - run.job_events_read >= JOB_EVENTS_EVERY:
                due.append((run.job_events_read, run, "job", [run.job_name]))
        due.sort(key=lambda d: d[0])
        for _, run, about, names in due[:EVENT_READS_PER_CHECK]:
            if about == "pods":
                run.pod_events_read = now
            else:
                run.job_events_read = now
            self._read_events(run, about, names)

    def _read_events(self, run: Run, about: str, names: list[str]) -> None:
        """Events of the run's pods or Job, read by the pool; they come back as ("events", ...)."""
        run.events_reading = True
        read = self.cluster.pod_events if about == "pods" else self.cluster.job_events

        def task() -> tuple:
            events: list[dict] | None = []
            for name in names:
                try:
                    events += read(name)
                except ClusterError as e:
                    log.debug("events of %s %s unavailable: %s", about, name, e)
                    if about == "job":
                        events = None  # nothing to decide on
                        break
            return ("events", run.run_id, about, events)
        self.pool.submit(task)

    def _on_events(self, run_id: int, about: str, events: list[dict] | None) -> None:
        run = self.runs.get(run_id)
        if run is None:
            return  # ended meanwhile
        run.events_reading = False
        if events is None or (about == "pods" and not events):
            return
        state = self._state(run, events)
        if state.terminal:
            self._finish(run, state.status, state.detail)
        elif about == "job":
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

    def _finish(self, run: Run, status: TaskStatus, detail: str, refresh: bool = False) -> None:
        """The run ended: its ending (node.finishing) queues its one result, then removes its
        Job and files."""
        self.runs.pop(run.run_id, None)
        self.finishing.finish(run, status, detail, refresh)

    def _retry_held_back(self) -> None:
        self.finishing.retry_held_back()
        commands, self._unaccepted = self._unaccepted, []
        for raw in commands:
            self._on_command(raw)

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
                    self.finishing.store(Result(
                        run_id=row.run_id, task_id=row.task_id, parent_id=None,
                        status=TaskStatus.START_FAILED.value, data="",
                        logs=f"could not start after a restart: {e.message}"))
                    continue
                log.info("run %s: creating its job after a restart", row.run_id)
                self._start(cmd)
