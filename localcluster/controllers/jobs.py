"""Job controller and TTL-after-finished controller (batch/v1 semantics of Kubernetes 1.30).

Job controller: creates pods from ``spec.template`` (``generateName: <job>-``, the job labels,
an owner reference with controller/blockOwnerDeletion), counts finished pods into
``status.succeeded``/``status.failed`` (a pod being deleted before it finished counts as failed
at once unless ``podReplacementPolicy: Failed``, as in the real controller),
replaces failed pods while ``failed <= backoffLimit`` after a back-off of 1s, 2s, 4s… capped at
10s (shorter than the real 10s…6min), and finishes the Job with condition Complete, or Failed
with reason BackoffLimitExceeded or DeadlineExceeded (``activeDeadlineSeconds`` from
``status.startTime``), deleting its still-active pods. Non-indexed completions/parallelism are
supported simply; ``suspend: true`` only holds pod creation back.

A pod the API server refuses (admission: Pod Security, quota, RuntimeClass) is a ``FailedCreate``
Warning event on the Job ("Error creating: <the API's message>") and is tried again after the
real controller's API back-off (its rate-limited requeue: 1s, 2s, 4s… capped at 60s, reset once
a pod is created); the Job stays active, with no pod, and its deadline still runs.

TTL controller: deletes a finished Job (Background propagation) ``ttlSecondsAfterFinished`` after
its completionTime / Failed condition.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from localcluster.apiserver.errors import ApiError
from localcluster.kubelet.events import EventRecorder
from localcluster.kubelet.status import rfc3339
from localcluster.apiserver.resources import JOBS, PODS
from localcluster.controllers.workqueue import Reconciler

log = logging.getLogger(__name__)

DEFAULT_BACKOFF_LIMIT = 6


@dataclass
class JobControllerConfig:
    backoff_initial: float = 1.0  # after a failed pod
    backoff_max: float = 10.0
    # after a refused pod creation (the real DefaultJobApiBackOff / MaxJobApiBackOff)
    create_backoff_initial: float = 1.0
    create_backoff_max: float = 60.0


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def _controller_uid(obj: dict) -> tuple[str, str] | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "Job" and ref.get("controller"):
            return ref.get("uid"), ref.get("name")
    return None


def finished_condition(status: dict) -> dict | None:
    for c in status.get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return c
    return None


def _pod_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def pod_from_template(job: dict) -> dict:
    meta, spec = job["metadata"], job.get("spec") or {}
    tmpl = spec.get("template") or {}
    tmeta = tmpl.get("metadata") or {}
    name, uid = meta["name"], meta["uid"]
    labels = dict(tmeta.get("labels") or {})
    labels.update({"controller-uid": uid, "batch.kubernetes.io/controller-uid": uid,
                   "job-name": name, "batch.kubernetes.io/job-name": name})
    pod_meta: dict = {"generateName": f"{name[:57]}-", "namespace": meta["namespace"],
                      "labels": labels,
                      "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                           "uid": uid, "controller": True,
                                           "blockOwnerDeletion": True}]}
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    import copy
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta,
            "spec": copy.deepcopy(tmpl.get("spec") or {})}


class JobController(Reconciler):
    kind = "job"

    def __init__(self, store, config: JobControllerConfig | None = None) -> None:
        super().__init__()
        self.store = store
        self.config = config or JobControllerConfig()
        self.events = EventRecorder(store, "localcluster")
        # per job uid: pod uid -> "s"|"f" (counted finishes survive pod deletion)
        self._counted: dict[str, dict[str, str]] = {}
        self._last_failure: dict[str, float] = {}  # job uid -> monotonic time of last failure
        # job uid -> (refused creations in a row, monotonic time before which not to try again)
        self._create_backoff: dict[str, tuple[int, float]] = {}

    def start(self) -> None:
        self.store.subscribe(self._on_event, shared=True)  # read only
        for job in self.store.list(JOBS)[0]:
            self._enqueue((job["metadata"]["namespace"], job["metadata"]["name"]))

    def close(self) -> None:
        self.store.unsubscribe(self._on_event)
        super().close()

    # --- notifications ---

    def _on_event(self, etype: str, res, obj: dict) -> None:
        meta = obj["metadata"]
        if res == JOBS:
            if etype == "DELETED":
                self._counted.pop(meta["uid"], None)
                self._last_failure.pop(meta["uid"], None)
                self._create_backoff.pop(meta["uid"], None)
            self._enqueue((meta["namespace"], meta["name"]))
        elif res == PODS:
            owner = _controller_uid(obj)
            if owner is None:
                return
            job_uid, job_name = owner
            if etype == "DELETED" and job_uid in self._counted:
                phase = (obj.get("status") or {}).get("phase")
                counted = self._counted[job_uid]
                if meta["uid"] not in counted:
                    # deleted before it finished: a failure, as with job tracking finalizers
                    counted[meta["uid"]] = "s" if phase == "Succeeded" else "f"
                    if counted[meta["uid"]] == "f":
                        self._last_failure[job_uid] = time.monotonic()
            self._enqueue((meta["namespace"], job_name))

    # --- reconcile ---

    def sync(self, ns: str, name: str) -> None:
        job = self.store.try_get(JOBS, ns, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return
        uid = job["metadata"]["uid"]
        spec = job.get("spec") or {}
        status = dict(job.get("status") or {})
        if finished_condition(status):
            self._ttl(job)
            return
        now = dt.datetime.now(dt.timezone.utc)
        start = _parse_time(status.get("startTime"))
        if start is None and not spec.get("suspend"):
            status["startTime"] = rfc3339(now)
            start = _parse_time(status["startTime"])
        # select by the controller-uid label first (as the Job's own selector does), so only this
        # Job's pods are copied: copying every pod of the namespace made each sync O(pods)
        candidates, _ = self.store.list(PODS, ns, label_selector=f"controller-uid={uid}")
        pods = [p for p in candidates if (_controller_uid(p) or ("",))[0] == uid]
        counted = self._counted.setdefault(uid, {})
        # as the real controller's isPodFailed: unless only Failed pods are to be replaced
        # (podReplacementPolicy: Failed, or a podFailurePolicy), a pod being deleted before it
        # finished counts as failed at once, so with backoffLimit 0 it fails the Job rather than
        # being replaced by a second run of the workload
        only_failed = spec.get("podReplacementPolicy") == "Failed" or bool(spec.get("podFailurePolicy"))
        for p in pods:
            phase = (p.get("status") or {}).get("phase")
            puid = p["metadata"]["uid"]
            if puid in counted:
                continue
            if phase == "Succeeded":
                counted[puid] = "s"
            elif phase == "Failed" or (p["metadata"].get("deletionTimestamp") and not only_failed):
                counted[puid] = "f"
                self._last_failure[uid] = time.monotonic()
        succeeded = max(list(counted.values()).count("s"), int(status.get("succeeded") or 0))
        failed = max(list(counted.values()).count("f"), int(status.get("failed") or 0))
        active = [p for p in pods if (p.get("status") or {}).get("phase") not in
                  ("Succeeded", "Failed") and not p["metadata"].get("deletionTimestamp")]
        terminating = [p for p in pods if (p.get("status") or {}).get("phase") not in
                       ("Succeeded", "Failed") and p["metadata"].get("deletionTimestamp")]
        backoff_limit = int(spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT))
        parallelism = int(spec.get("parallelism", 1))
        completions = spec.get("completions")
        if completions is None and "parallelism" not in spec:
            completions = 1
        deadline = spec.get("activeDeadlineSeconds")

        finish: tuple[str, str, str] | None = None
        if failed > backoff_limit:
            finish = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif deadline is not None and start is not None and \
                now >= start + dt.timedelta(seconds=int(deadline)):
            finish = ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
        elif completions is not None and succeeded >= int(completions):
            finish = ("Complete", "", "")
        elif completions is None and succeeded > 0 and not active:
            finish = ("Complete", "", "")

        conditions = list(status.get("conditions") or [])
        if finish is not None:
            ctype, reason, message = finish
            if ctype == "Failed":
                for p in active:
                    self._delete_pod(job, p)
                terminating += active
                active = []
            stamp = rfc3339(now)
            cond = {"type": ctype, "status": "True", "lastProbeTime": stamp,
                    "lastTransitionTime": stamp}
            if reason:
                cond["reason"], cond["message"] = reason, message
            conditions.append(cond)
            if ctype == "Complete":
                status["completionTime"] = stamp
                self.events.record(job, "Normal", "Completed", "Job completed",
                                   component="job-controller")
            else:
                self.events.record(job, "Warning", reason, message, component="job-controller")
        elif not spec.get("suspend"):
            if completions is None:
                wanted = 0 if succeeded > 0 else parallelism
            else:
                wanted = min(parallelism, int(completions) - succeeded)
            # with only Failed pods replaced, terminating pods still hold their slot
            missing = wanted - len(active) - (len(terminating) if only_failed else 0)
            if missing > 0:
                delay = 0.0
                if failed > 0 and uid in self._last_failure:
                    backoff = min(self.config.backoff_max,
                                  self.config.backoff_initial * 2 ** (failed - 1))
                    delay = self._last_failure[uid] + backoff - time.monotonic()
                refused, retry_at = self._create_backoff.get(uid, (0, 0.0))
                if delay > 0:
                    self._after(delay, (ns, name), "backoff")
                elif retry_at > time.monotonic():  # our own status writes must not retry sooner
                    self._after(retry_at - time.monotonic(), (ns, name), "retry")
                else:
                    for _ in range(missing):
                        pod = self._create_pod(job)
                        if pod is None:
                            wait = min(self.config.create_backoff_max,
                                       self.config.create_backoff_initial * 2 ** refused)
                            self._create_backoff[uid] = (refused + 1, time.monotonic() + wait)
                            self._after(wait, (ns, name), "retry")
                            break
                        self._create_backoff.pop(uid, None)
                        active.append(pod)
            if deadline is not None and start is not None:
                left = (start + dt.timedelta(seconds=int(deadline)) - now).total_seconds()
                self._after(left + 0.05, (ns, name), "deadline")

        status.update({
            "active": len(active), "ready": sum(1 for p in active if _pod_ready(p)),
            "terminating": len(terminating), "uncountedTerminatedPods": {},
            "succeeded": succeeded, "failed": failed})
        for k in ("active", "succeeded", "failed"):
            if not status[k]:
                del status[k]  # omitempty, as the real API serves them
        if conditions:
            status["conditions"] = conditions

        def write(obj: dict) -> None:
            if obj["metadata"]["uid"] == uid:
                obj["status"] = status
        job = self.store.mutate(JOBS, ns, name, write)
        if finish is not None:
            self._ttl(job)

    def _create_pod(self, job: dict) -> dict | None:
        meta = job["metadata"]
        try:
            pod = self.store.create(PODS, meta["namespace"], pod_from_template(job))
        except ApiError as e:
            self.events.record(job, "Warning", "FailedCreate", f"Error creating: {e.message}",
                               component="job-controller")
            return None
        self.events.record(job, "Normal", "SuccessfulCreate",
                           f"Created pod: {pod['metadata']['name']}", component="job-controller")
        return pod

    def _delete_pod(self, job: dict, pod: dict) -> None:
        pmeta = pod["metadata"]
        try:
            self.store.delete(PODS, pmeta["namespace"], pmeta["name"],
                              preconditions={"uid": pmeta["uid"]})
        except ApiError as e:
            if e.code != 404:
                log.warning("cannot delete pod %s/%s: %s", pmeta["namespace"], pmeta["name"],
                            e.message)
            return
        self.events.record(job, "Normal", "SuccessfulDelete", f"Deleted pod: {pmeta['name']}",
                           component="job-controller")

    # --- TTL after finished ---

    def _ttl(self, job: dict) -> None:
        spec, meta = job.get("spec") or {}, job["metadata"]
        ttl = spec.get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        status = job.get("status") or {}
        cond = finished_condition(status)
        finished = _parse_time(status.get("completionTime")) or _parse_time(
            (cond or {}).get("lastTransitionTime"))
        if finished is None:
            return
        left = (finished + dt.timedelta(seconds=int(ttl))
                - dt.datetime.now(dt.timezone.utc)).total_seconds()
        key = (meta["namespace"], meta["name"])
        if left > 0:
            self._after(left, key, "ttl")
            return
        try:
            self.store.delete(JOBS, meta["namespace"], meta["name"], propagation="Background",
                              preconditions={"uid": meta["uid"]})
        except ApiError as e:
            if e.code not in (404, 409):
                log.warning("TTL: cannot delete job %s/%s: %s", *key, e.message)
