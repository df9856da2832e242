"""The tables of `node.status`: how each Kubernetes reason reads as a vantage6 status (pure data).

Changing how a reason is reported is a change here; the rules in `node.status` stay as they are.
"""
from __future__ import annotations

from node.models import TaskStatus

S = TaskStatus


# --- tables ----------------------------------------------------------------------------------

# A container waiting for one of these reasons will not start by itself: final at once.
FATAL_WAITING_REASONS: dict[str, TaskStatus] = {
    "ErrImagePull": S.NO_DOCKER_IMAGE,
    "ImagePullBackOff": S.NO_DOCKER_IMAGE,
    "InvalidImageName": S.NO_DOCKER_IMAGE,
    "ErrImageNeverPull": S.NO_DOCKER_IMAGE,
    "CreateContainerConfigError": S.START_FAILED,
    "CreateContainerError": S.START_FAILED,
    "RunContainerError": S.START_FAILED,
    "PreStartHookError": S.START_FAILED,
}

# How a container's termination reads, for a Job that failed because its pod failed.
TERMINATED_REASONS: dict[str, tuple[TaskStatus, str]] = {
    "OOMKilled": (S.CRASHED, "out of memory (OOMKilled)"),
    "StartError": (S.START_FAILED, "container could not start"),
    "ContainerCannotRun": (S.START_FAILED, "container could not run"),
    "Error": (S.CRASHED, "algorithm failed"),
    "DeadlineExceeded": (S.CRASHED, "deadline exceeded"),
}

# Pod-level failure reasons (status.reason of a Failed pod).
POD_FAILURE_REASONS: dict[str, tuple[TaskStatus, str]] = {
    "Evicted": (S.FAILED, "pod evicted"),
    "DeadlineExceeded": (S.CRASHED, "deadline exceeded"),
    "UnexpectedAdmissionError": (S.START_FAILED, "pod not admitted by the kubelet"),
    "NodeAffinity": (S.START_FAILED, "pod not admitted by the kubelet"),
}

# Pod-level failure reasons by prefix: the kubelet's admission names the resource it lacks
# (OutOfcpu, OutOfmemory, OutOfpods, OutOfnvidia.com/gpu ...).
POD_FAILURE_PREFIXES: dict[str, tuple[TaskStatus, str]] = {
    "OutOf": (S.START_FAILED, "pod rejected by the kubelet (the node lacks a resource)"),
}

# Job Failed/FailureTarget reasons that need no look at the pods.
JOB_FAILURE_REASONS: dict[str, tuple[TaskStatus, str]] = {
    "DeadlineExceeded": (S.CRASHED, "deadline exceeded (activeDeadlineSeconds)"),
}

# Warning events about a pod that mean it cannot start.
FATAL_EVENT_REASONS: dict[str, TaskStatus] = {
    "FailedMount": S.START_FAILED,
    "FailedAttachVolume": S.START_FAILED,
}

# Warning events about the Job itself that mean its pod will not be created (the Job controller's
# reason; the message is the API server's refusal: "Error creating: pods ... is forbidden: ...").
JOB_EVENT_REASONS: dict[str, tuple[TaskStatus, str]] = {
    "FailedCreate": (S.START_FAILED, "the cluster refused to create the pod"),
}

# Reasons of a non-final state that are news upstream even when the status itself stays.
WAITING_REASONS = frozenset({"Unschedulable"})

FINAL_JOB_CONDITIONS = ("Complete", "Failed", "FailureTarget")
