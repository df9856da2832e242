"""What the node knows of one run while it is in flight, and the run's status from that (by
`node.status`). The agent owns a Run until it decides the run ended; from then on the run's
ending (`node.finishing`) does."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from node.config import NodeConfig
from node.errors import ClusterError
from node.jobs import RUN_LABEL
from node.models import TaskStatus
from node.objects import slim
from node.status import RunState, run_status
from node.status_tables import FINAL_JOB_CONDITIONS

log = logging.getLogger(__name__)


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
    pod_events_read: float = 0.0  # monotonic: when its pods' events were last read
    events_reading: bool = False  # an events read is in the pool: do not ask again meanwhile
    image: str = ""               # as the task named it ("" for a run adopted after a restart)
    # the NetworkPolicies selecting its pod when its Job was created (node.policy_view); None:
    # not known then (adopted after a restart, or the policies not yet listed)
    policies: list[dict] | None = None
    pin_checked: bool = False     # images.digest pin: its image's digest was compared or pinned


def run_id_of(obj: dict) -> int | None:
    value = (obj.get("metadata", {}).get("labels") or {}).get(RUN_LABEL, "")
    return int(value) if value.isdigit() else None


def state_of(run: Run, config: NodeConfig, events: list[dict] | tuple = (),
             killed: bool | None = None) -> RunState:
    """The run's status now, with the configured unschedulable grace."""
    return run_status(None if run.job_deleted else run.job, list(run.pods.values()),
                      killed=run.killed if killed is None else killed, events=events,
                      now=datetime.now(timezone.utc),
                      unschedulable_grace_seconds=config.job.unschedulable_grace_seconds)


def ended_by_job(run: Run) -> bool:
    """True when the run's end follows from its Job alone (killed, Job gone or being deleted, a
    final condition): then its pods can only tell which ending, never that it did not end, so
    they may be read again later (off the agent thread) without changing the decision."""
    job = None if run.job_deleted else run.job
    if run.killed or job is None or (job.get("metadata") or {}).get("deletionTimestamp"):
        return True
    return any(isinstance(c, dict) and c.get("type") in FINAL_JOB_CONDITIONS
               and c.get("status") == "True" for c in (job.get("status") or {}).get("conditions") or [])


def refresh_pods(run: Run, pods_of: Callable[[int], list[dict]]) -> bool:
    """Read the run's pods from the API. True when that changed what the node knew."""
    try:
        pods = pods_of(run.run_id)
    except ClusterError as e:
        log.warning("run %s: could not read its pods: %s", run.run_id, e)
        return False
    fresh = {p["metadata"]["name"]: slim(p) for p in pods}
    changed = {n: p["metadata"].get("resourceVersion") for n, p in fresh.items()} != \
        {n: p["metadata"].get("resourceVersion") for n, p in run.pods.items()}
    run.pods = fresh
    return changed
