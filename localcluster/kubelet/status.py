"""Pure pod-status logic of the kubelet: phase and conditions from container statuses."""
from __future__ import annotations

import datetime as dt


def rfc3339(t: dt.datetime | None = None) -> str:
    t = t or dt.datetime.now(dt.timezone.utc)
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def waiting(reason: str, message: str | None = None) -> dict:
    w: dict = {"reason": reason}
    if message:
        w["message"] = message
    return {"waiting": w}


def initial_status(container: dict) -> dict:
    return {"name": container["name"], "image": container.get("image", ""), "imageID": "",
            "ready": False, "started": False, "restartCount": 0, "lastState": {},
            "state": waiting("ContainerCreating")}


def _stopped_or_waiting(cs: dict) -> str:
    state = cs.get("state") or {}
    if "running" in state:
        return "running"
    if "terminated" in state:
        return "succeeded" if state["terminated"].get("exitCode") == 0 else "failed"
    # waiting after an earlier run counts as stopped, as in the kubelet's getPhase
    last = (cs.get("lastState") or {}).get("terminated")
    if last is not None:
        return "succeeded" if last.get("exitCode") == 0 else "failed"
    return "waiting"


def pod_phase(restart_policy: str, init_done: bool, init_failed: bool,
              statuses: list[dict]) -> str:
    """The phase as the kubelet computes it (pkg/kubelet/kubelet_pods.go getPhase)."""
    if init_failed:
        return "Failed"
    if not init_done:
        return "Pending"
    kinds = [_stopped_or_waiting(cs) for cs in statuses]
    running = kinds.count("running")
    waiting_n = kinds.count("waiting")
    succeeded = kinds.count("succeeded")
    stopped = succeeded + kinds.count("failed")
    if not statuses or waiting_n == len(statuses):
        return "Pending"
    if running > 0:
        return "Running"
    if stopped > 0 and waiting_n == 0:
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def set_condition(conditions: list[dict], ctype: str, status: str, reason: str | None = None,
                  message: str | None = None, at: str | None = None) -> None:
    """Add or update a condition; lastTransitionTime changes only when the status does."""
    at = at or rfc3339()
    for c in conditions:
        if c["type"] == ctype:
            if c["status"] != status:
                c["lastTransitionTime"] = at
            c["status"] = status
            for key, value in (("reason", reason), ("message", message)):
                if value:
                    c[key] = value
                else:
                    c.pop(key, None)
            return
    c = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": at}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    conditions.append(c)


def pod_conditions(existing: list[dict], phase: str, sandbox_ready: bool, init_done: bool,
                   init_statuses: list[dict], statuses: list[dict],
                   sidecars: tuple[str, ...] | list[str] = ()) -> list[dict]:
    """PodReadyToStartContainers, Initialized, Ready, ContainersReady, PodScheduled.

    sidecars: names of the native sidecars (restartable init containers): one is initialized
    once started, and its readiness counts for the pod's, before the containers' (as in
    pkg/kubelet/status/generate.go)."""
    conds = [dict(c) for c in existing]
    set_condition(conds, "PodReadyToStartContainers", "True" if sandbox_ready else "False")
    if init_done:
        set_condition(conds, "Initialized", "True")
    else:
        pending = [cs["name"] for cs in init_statuses
                   if (not cs.get("started") if cs["name"] in sidecars else
                       "terminated" not in (cs.get("state") or {})
                       or cs["state"]["terminated"].get("exitCode") != 0)]
        set_condition(conds, "Initialized", "False", "ContainersNotInitialized",
                      f"containers with incomplete status: [{' '.join(pending)}]")
    counted = [cs for cs in init_statuses if cs["name"] in sidecars] + list(statuses)
    not_ready = [cs["name"] for cs in counted if not cs.get("ready")]
    if phase in ("Succeeded", "Failed"):
        ready, reason, message = "False", "PodCompleted", None
    elif not_ready:
        ready, reason = "False", "ContainersNotReady"
        message = f"containers with unready status: [{' '.join(not_ready)}]"
    else:
        ready, reason, message = "True", None, None
    set_condition(conds, "Ready", ready, reason, message)
    set_condition(conds, "ContainersReady", ready, reason, message)
    # the binding sets it; a pod created with spec.nodeName gets it from the kubelet
    if not any(c["type"] == "PodScheduled" for c in conds):
        set_condition(conds, "PodScheduled", "True")
    order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
             "PodScheduled"]
    conds.sort(key=lambda c: order.index(c["type"]) if c["type"] in order else len(order))
    return conds
