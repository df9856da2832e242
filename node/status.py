"""A run's vantage6 status from its Job, its pods and (optionally) their events: pure, table-driven.

Inputs are raw Kubernetes JSON objects (camelCase) as the API returns them. The first rule of
``_RULES`` that matches decides; the per-reason outcomes are the tables of `node.status_tables`.

Choices:
- Image pull errors, container config/start errors and volume mount failures are final at once
  (``terminal=True``), so a pod that cannot start is reported within seconds, not after a timeout.
  With ``restartPolicy: Never`` and ``backoffLimit: 0`` Kubernetes would otherwise retry them for
  ever (ErrImagePull → ImagePullBackOff → ErrImagePull …) while the Job stays active.
- An unschedulable pod (PodScheduled=False, reason Unschedulable) might only wait for capacity on a
  busy or autoscaled cluster. It is ``start failed`` once ``unschedulable_grace_seconds`` have
  passed since the condition was set (default 0: fail fast, as for the other start problems);
  until then it is ``pending`` with the scheduler's message and ``reason="Unschedulable"``
  (one of ``WAITING_REASONS``, worth reporting though the status stays), so a caller using a
  grace can re-evaluate on a timer.
- A Job whose pod the cluster refused to create (admission: Pod Security, ResourceQuota, a missing
  RuntimeClass) has no pod at all; the Job controller says why only in a Warning ``FailedCreate``
  event on the Job, and retries until activeDeadlineSeconds. Such a Job with no pod is ``start
  failed`` at once, with the refusal's text (``JOB_EVENT_REASONS``).
- A pod that finished while its Job has no final condition yet is still ``active``: the Job
  controller decides (with ``backoffLimit > 0`` a new pod may follow).
- A Job that failed for a reason not in the tables, with no failed pod to explain it, is
  ``unknown error``: the node reports what Kubernetes said instead of guessing.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from node.companion import SERVICE_NAME, ended_detail, read_annotation
from node.manifests import CONTAINER_NAME
from node.models import TaskStatus
from node.status_tables import (FATAL_EVENT_REASONS, FATAL_WAITING_REASONS, FINAL_JOB_CONDITIONS,  # noqa: F401
                                 JOB_EVENT_REASONS, JOB_FAILURE_REASONS, POD_FAILURE_PREFIXES,
                                 POD_FAILURE_REASONS,
                                 TERMINATED_REASONS, WAITING_REASONS)

S = TaskStatus


@dataclass(frozen=True)
class RunState:
    status: TaskStatus
    terminal: bool
    detail: str = ""
    reason: str = ""      # the Kubernetes reason behind the status, when there is one


# --- facts -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Container:
    name: str
    waiting: tuple[str, str] | None            # (reason, message)
    terminated: tuple[str, int | None, str] | None  # (reason, exitCode, message)
    started: bool = False
    ran_before: tuple[str, int | None, str] | None = None  # lastState.terminated, as above
    ran_seconds: float | None = None  # how long its last run lasted, when it ended


@dataclass(frozen=True)
class _Pod:
    name: str
    created: str
    phase: str
    reason: str
    message: str
    deleting: bool
    scheduled: bool
    unschedulable: tuple[str, str] | None    # (message, lastTransitionTime)
    containers: tuple[_Container, ...]
    service: dict | None = None    # the companion service's annotation (CONTRACTS §10)


@dataclass(frozen=True)
class _Facts:
    killed: bool
    job: dict | None
    job_deleting: bool
    condition: tuple[str, str, str] | None   # (type, reason, message) of the final condition
    pods: tuple[_Pod, ...]                   # oldest first
    events: tuple[tuple[str, str, str], ...]  # (pod name, reason, message) of Warning events
    job_events: tuple[tuple[str, str], ...]  # (reason, message) of Warning events on the Job
    now: datetime | None
    grace: float


def _d(obj: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(k)
    return obj


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _termination(terminated: Any) -> tuple[str, int | None, str] | None:
    if not isinstance(terminated, dict):
        return None
    code = terminated.get("exitCode")
    return (_text(terminated.get("reason")), code if isinstance(code, int) else None,
            _text(terminated.get("message")))


def _container(status: dict) -> _Container:
    waiting = _d(status, "state", "waiting")
    return _Container(
        name=_text(status.get("name")),
        waiting=(_text(waiting.get("reason")), _text(waiting.get("message"))) if isinstance(waiting, dict) else None,
        terminated=_termination(_d(status, "state", "terminated")),
        started=status.get("started") is True,
        ran_before=_termination(_d(status, "lastState", "terminated")),
        ran_seconds=_duration(_d(status, "state", "terminated") or _d(status, "lastState", "terminated")),
    )


def _duration(terminated: Any) -> float | None:
    if not isinstance(terminated, dict):
        return None
    start = _parse_time(_text(terminated.get("startedAt")))
    end = _parse_time(_text(terminated.get("finishedAt")))
    return (end - start).total_seconds() if start is not None and end is not None else None


def _pod(pod: dict) -> _Pod:
    status = pod.get("status") or {}
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    sched = next((c for c in conditions if c.get("type") == "PodScheduled"), None)
    unschedulable = None
    if sched is not None and sched.get("status") == "False" and sched.get("reason") == "Unschedulable":
        unschedulable = (_text(sched.get("message")), _text(sched.get("lastTransitionTime")))
    statuses = [s for s in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
                if isinstance(s, dict)]
    return _Pod(
        name=_text(_d(pod, "metadata", "name")),
        created=_text(_d(pod, "metadata", "creationTimestamp")),
        phase=_text(status.get("phase")) or "Pending",
        reason=_text(status.get("reason")),
        message=_text(status.get("message")),
        deleting=bool(_d(pod, "metadata", "deletionTimestamp")),
        scheduled=sched is not None and sched.get("status") == "True",
        unschedulable=unschedulable,
        containers=tuple(_container(s) for s in statuses),
        service=read_annotation(_d(pod, "metadata", "annotations")),
    )


def _final_condition(job: dict | None) -> tuple[str, str, str] | None:
    for c in _d(job, "status", "conditions") or []:
        if isinstance(c, dict) and c.get("type") in FINAL_JOB_CONDITIONS and c.get("status") == "True":
            return (c["type"], _text(c.get("reason")), _text(c.get("message")))
    return None


def _pod_events(events: Iterable[dict], pod_names: set[str], job_name: str) -> tuple[tuple[str, str, str], ...]:
    out = []
    for e in events:
        if not isinstance(e, dict) or e.get("type") != "Warning":
            continue
        # core/v1 Events use involvedObject/message, events.k8s.io/v1 regarding/note.
        obj = e.get("involvedObject") or e.get("regarding") or {}
        name = _text(obj.get("name"))
        if obj.get("kind") != "Pod" or not (name in pod_names or (job_name and name.startswith(job_name + "-"))):
            continue
        out.append((name, _text(e.get("reason")), _text(e.get("message") or e.get("note"))))
    return tuple(out)


def _job_events(events: Iterable[dict], job: dict | None) -> tuple[tuple[str, str], ...]:
    name, uid = _text(_d(job, "metadata", "name")), _text(_d(job, "metadata", "uid"))
    out = []
    for e in events:
        if not isinstance(e, dict) or e.get("type") != "Warning":
            continue
        obj = e.get("involvedObject") or e.get("regarding") or {}
        if obj.get("kind") != "Job" or not name or _text(obj.get("name")) != name:
            continue
        if uid and obj.get("uid") and obj.get("uid") != uid:
            continue  # about an earlier Job of the same name
        out.append((_text(e.get("reason")), _text(e.get("message") or e.get("note"))))
    return tuple(out)


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


# --- rules -----------------------------------------------------------------------------------

Rule = Callable[[_Facts], "RunState | None"]


REFUSAL_LIMIT = 4000  # characters of an admission refusal kept in a run's detail


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _join(*parts: str) -> str:
    return ": ".join(_short(p) for p in parts if p)


def _killed(f: _Facts) -> RunState | None:
    return RunState(S.KILLED, True, "killed on request") if f.killed else None


def _job_gone(f: _Facts) -> RunState | None:
    if f.job is None:
        return RunState(S.FAILED, True, "job deleted outside the node", "JobDeleted")
    if f.job_deleting and f.condition is None:
        return RunState(S.FAILED, True, "job deleted outside the node (being deleted)", "JobDeleted")
    return None


def _job_complete(f: _Facts) -> RunState | None:
    if f.condition is not None and f.condition[0] == "Complete":
        return RunState(S.COMPLETED, True, "", "Complete")
    return None


def _last_pod(f: _Facts) -> _Pod | None:
    return max(f.pods, key=lambda p: (p.created, p.name)) if f.pods else None


def _pod_failure(pod: _Pod) -> RunState | None:
    """How a failed pod reads (for a Job that failed because of it)."""
    if pod.reason in POD_FAILURE_REASONS:
        status, text = POD_FAILURE_REASONS[pod.reason]
        return RunState(status, True, _join(text, pod.message), pod.reason)
    for prefix, (status, text) in POD_FAILURE_PREFIXES.items():
        if pod.reason.startswith(prefix):
            return RunState(status, True, _join(text, pod.message), pod.reason)
    for c in pod.containers:
        if c.terminated is None:
            continue
        reason, code, message = c.terminated
        if code == 0 and reason != "OOMKilled":
            continue
        status, text = TERMINATED_REASONS.get(reason, (S.CRASHED, "algorithm failed"))
        exit_text = f"exit code {code}" if code is not None else ""
        if pod.deleting:
            return RunState(S.FAILED, True, _join("pod deleted outside the node", exit_text), "PodDeleted")
        return RunState(status, True, _join(text, exit_text, message), reason or "Error")
    return None


def _job_failed(f: _Facts) -> RunState | None:
    if f.condition is None or f.condition[0] not in ("Failed", "FailureTarget"):
        return None
    _, reason, message = f.condition
    if reason in JOB_FAILURE_REASONS:
        status, text = JOB_FAILURE_REASONS[reason]
        return RunState(status, True, _join(text, message), reason)
    pod = _last_pod(f)
    if pod is not None:
        state = _pod_failure(pod)
        if state is not None:
            return state
    if reason in ("BackoffLimitExceeded", "PodFailurePolicy"):
        # The failed pod is gone already: only a deletion removes it before the Job's TTL.
        return RunState(S.FAILED, True, _join("pod failed and was removed (deleted outside the node?)", message),
                        reason)
    # A reason this node does not know (a newer Kubernetes, another controller): say so rather
    # than guess at a cause.
    return RunState(S.UNKNOWN_ERROR, True,
                    _join(f"job failed for a reason the node does not know "
                          f"({reason or 'no reason given'})", message), reason)


def _job_refused(f: _Facts) -> RunState | None:
    """No pod, and the Job controller says why: the API server refused to create it."""
    if f.pods:
        return None
    for reason, message in f.job_events:
        if reason in JOB_EVENT_REASONS:
            status, text = JOB_EVENT_REASONS[reason]
            # whole: a Pod Security refusal lists every violation, and each is a fix to make
            return RunState(status, True, f"{text}: {_short(message, REFUSAL_LIMIT)}", reason)
    return None


def _service(f: _Facts) -> RunState | None:
    """A companion service that never became ready, before the algorithm could start (§10).
    Once the algorithm has run, the service was ready; what happens later is the algorithm's."""
    pod = _last_pod(f)
    failed = f.condition is not None and f.condition[0] in ("Failed", "FailureTarget")
    # a failed Job's controller deletes its pods: they still tell why
    if pod is None or pod.service is None or (pod.deleting and not failed):
        return None
    svc = next((c for c in pod.containers if c.name == SERVICE_NAME), None)
    if svc is None or svc.started:
        return None
    algorithm = next((c for c in pod.containers if c.name == CONTAINER_NAME), None)
    if algorithm is not None and (algorithm.waiting is None or algorithm.ran_before is not None):
        return None
    image = pod.service.get("image", "?")
    if svc.waiting is not None and svc.waiting[0] in FATAL_WAITING_REASONS:
        reason, message = svc.waiting
        return RunState(FATAL_WAITING_REASONS[reason], True,
                        _join(f"companion service {image}", reason, message), reason)
    if svc.terminated is not None or svc.ran_before is not None:
        ended = svc.terminated or svc.ran_before
        return RunState(S.FAILED, True, _short(ended_detail(pod.service, *ended, svc.ran_seconds)),
                        "ServiceNotReady")
    if failed:
        _, reason, message = f.condition
        return RunState(S.FAILED, True, _join(f"companion service {image} never became ready "
                                              f"({pod.service.get('check', '?')})", reason, message),
                        "ServiceNotReady")
    return None


def _fatal_waiting(f: _Facts) -> RunState | None:
    for pod in f.pods:
        if pod.phase in ("Succeeded", "Failed") or pod.deleting:
            continue
        for c in pod.containers:
            if c.waiting is not None and c.waiting[0] in FATAL_WAITING_REASONS:
                reason, message = c.waiting
                return RunState(FATAL_WAITING_REASONS[reason], True, _join(reason, message), reason)
    return None


def _fatal_event(f: _Facts) -> RunState | None:
    running = {p.name for p in f.pods if p.phase == "Running"}
    for name, reason, message in f.events:
        if reason in FATAL_EVENT_REASONS and name not in running:
            return RunState(FATAL_EVENT_REASONS[reason], True, _join(reason, message), reason)
    return None


def _unschedulable(f: _Facts) -> RunState | None:
    for pod in f.pods:
        if pod.unschedulable is None or pod.deleting:
            continue
        message, since = pod.unschedulable
        detail = _join("Unschedulable", message)
        if f.grace <= 0:
            return RunState(S.START_FAILED, True, detail, "Unschedulable")
        started = _parse_time(since)
        if f.now is not None and started is not None and (f.now - started).total_seconds() >= f.grace:
            return RunState(S.START_FAILED, True, detail, "Unschedulable")
        return RunState(S.PENDING, False, detail, "Unschedulable")
    return None


def _progress(f: _Facts) -> RunState | None:
    pod = _last_pod(f)
    if pod is None:
        return RunState(S.PENDING, False, "waiting for a pod")
    if pod.phase in ("Succeeded", "Failed"):
        return RunState(S.ACTIVE, False, f"pod {pod.phase.lower()}; waiting for the job", pod.phase)
    if pod.phase == "Running":
        return RunState(S.ACTIVE, False, "", "Running")
    if pod.phase == "Unknown":
        return RunState(S.ACTIVE, False, "pod state unknown (node unreachable?)", "Unknown")
    waiting = next((c.waiting for c in pod.containers if c.waiting is not None), None)
    if waiting is not None:
        return RunState(S.INITIALIZING, False, _join(*waiting), waiting[0])
    if pod.scheduled:
        return RunState(S.INITIALIZING, False, "", "Scheduled")
    return RunState(S.PENDING, False, "waiting to be scheduled")


# Precedence: an explicit kill, a vanished Job, the Job's success, a companion service that never
# became ready (§10), the Job's failure, a pod the cluster refused to create, then what blocks
# the pod.
_RULES: tuple[Rule, ...] = (
    _killed, _job_gone, _job_complete, _service, _job_failed,
    _job_refused, _fatal_waiting, _fatal_event, _unschedulable, _progress,
)


def run_status(job: dict | None, pods: Iterable[dict] = (), *, killed: bool = False,
               events: Iterable[dict] = (), now: datetime | None = None,
               unschedulable_grace_seconds: float = 0.0) -> RunState:
    """The run's status from its Job (None: deleted), its pods and optionally events (core/v1 or
    events.k8s.io/v1) about those pods and about the Job.

    ``killed``: the node deleted the Job on a kill request. ``now`` (timezone-aware) is needed only
    with a positive ``unschedulable_grace_seconds``.
    """
    pods = tuple(_pod(p) for p in pods if isinstance(p, dict))
    events = tuple(events or ())
    job_name = _text(_d(job, "metadata", "name"))
    facts = _Facts(
        killed=killed,
        job=job if isinstance(job, dict) else None,
        job_deleting=bool(_d(job, "metadata", "deletionTimestamp")),
        condition=_final_condition(job) if isinstance(job, dict) else None,
        pods=pods,
        events=_pod_events(events, {p.name for p in pods}, job_name),
        job_events=_job_events(events, job if isinstance(job, dict) else None),
        now=now.astimezone(timezone.utc) if now is not None else None,
        grace=unschedulable_grace_seconds,
    )
    for rule in _RULES:
        state = rule(facts)
        if state is not None:
            return state
    return RunState(S.UNKNOWN_ERROR, True, "no rule matched")  # pragma: no cover - _progress always matches
