"""Status mapping over real Kubernetes objects (tests/node/fixtures, see its README)."""
from __future__ import annotations

import copy
import functools
from datetime import datetime, timedelta, timezone
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from node.models import TaskStatus as S
from node.status import RunState, run_status

FIXTURES = Path(__file__).parent / "fixtures"


@functools.lru_cache(maxsize=None)
def _read(name: str) -> dict:
    return yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())


def load(name: str) -> dict:
    return copy.deepcopy(_read(name))


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.yaml")), ids=lambda p: p.stem)
def test_fixture_is_a_valid_kubernetes_1_30_object(path):
    obj = yaml.safe_load(path.read_text())
    kubernetes_validate.validate(obj, "1.30", strict=True)


def test_strict_validation_catches_a_misspelt_status_field():
    # Guards the test above: the schema check really looks at status fields.
    pod = load("pod-imagepullbackoff")
    pod["status"]["containerStatuses"][0]["stat"] = pod["status"]["containerStatuses"][0].pop("state")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, "1.30", strict=True)


# (job fixture or None, pod fixtures, event fixtures, status, terminal, words in the detail)
SCENARIOS = [
    ("job-new", [], [], S.PENDING, False, []),
    ("job-active", [], [], S.PENDING, False, []),
    ("job-active", ["pod-pending"], [], S.PENDING, False, ["scheduled"]),
    ("job-active", ["pod-containercreating"], [], S.INITIALIZING, False, ["ContainerCreating"]),
    ("job-active", ["pod-containercreating"], ["event-scheduled"], S.INITIALIZING, False, []),
    ("job-active", ["pod-running"], [], S.ACTIVE, False, []),
    ("job-active", ["pod-running"], ["event-scheduled"], S.ACTIVE, False, []),
    # the pod is done but the Job controller has not said so yet
    ("job-active", ["pod-succeeded"], [], S.ACTIVE, False, ["waiting for the job"]),
    ("job-active", ["pod-failed-exit3"], [], S.ACTIVE, False, ["waiting for the job"]),
    ("job-complete", ["pod-succeeded"], [], S.COMPLETED, True, []),
    ("job-complete", [], [], S.COMPLETED, True, []),
    # image problems fail at once
    ("job-active", ["pod-errimagepull"], [], S.NO_DOCKER_IMAGE, True, ["ErrImagePull", "pull access denied"]),
    ("job-active", ["pod-imagepullbackoff"], [], S.NO_DOCKER_IMAGE, True, ["ImagePullBackOff",
                                                                          "v6-demo/nope:1.0"]),
    ("job-active", ["pod-invalidimagename"], [], S.NO_DOCKER_IMAGE, True, ["InvalidImageName"]),
    ("job-active", ["pod-createcontainerconfigerror"], [], S.START_FAILED, True, ["CreateContainerConfigError",
                                                                                 "runAsNonRoot"]),
    ("job-active", ["pod-containercreating"], ["event-failedmount"], S.START_FAILED, True,
     ["FailedMount", "hostPath type check failed"]),
    ("job-active", ["pod-unschedulable"], [], S.START_FAILED, True, ["Unschedulable",
                                                                    "Insufficient nvidia.com/gpu"]),
    # the API server refused the Job's pod (admission): only the Job controller's event tells
    ("job-active", [], ["event-failedcreate-podsecurity"], S.START_FAILED, True,
     ["refused", 'violates PodSecurity "baseline:latest": hostPath volumes']),
    ("job-active", [], ["event-failedcreate-quota"], S.START_FAILED, True,
     ["refused", "exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=1"]),
    ("job-active", [], ["event-failedcreate-runtimeclass"], S.START_FAILED, True,
     ['pod rejected: RuntimeClass "nvidia" not found']),
    # ... but once a pod exists (the refusal was passing), the pod decides
    ("job-active", ["pod-running"], ["event-failedcreate-quota"], S.ACTIVE, False, []),
    ("job-deadline", [], ["event-failedcreate-podsecurity"], S.CRASHED, True, ["deadline"]),
    # failures decided by the Job
    ("job-backofflimit", ["pod-failed-exit3"], [], S.CRASHED, True, ["exit code 3"]),
    ("job-backofflimit", ["pod-oomkilled"], [], S.CRASHED, True, ["OOMKilled", "exit code 137"]),
    ("job-backofflimit", ["pod-starterror"], [], S.START_FAILED, True, ["exit code 128",
                                                                       "executable file not found"]),
    ("job-backofflimit", ["pod-evicted"], [], S.FAILED, True, ["evicted", "low on resource: memory"]),
    ("job-backofflimit", ["pod-outofgpu"], [], S.START_FAILED, True,
     ["rejected by the kubelet", "enough resource: nvidia.com/gpu"]),
    ("job-backofflimit", ["pod-deleted"], [], S.FAILED, True, ["deleted outside the node"]),
    ("job-backofflimit", [], [], S.FAILED, True, ["removed"]),
    ("job-deadline", [], [], S.CRASHED, True, ["deadline", "active longer than specified deadline"]),
    ("job-deadline", ["pod-running"], [], S.CRASHED, True, ["deadline"]),
    ("job-failed-unknown-reason", ["pod-running"], [], S.UNKNOWN_ERROR, True,
     ["does not know", "MaxFailedIndexesExceeded"]),
    # deleted from outside the node
    (None, [], [], S.FAILED, True, ["job deleted outside the node"]),
    (None, ["pod-running"], [], S.FAILED, True, ["job deleted outside the node"]),
    ("job-deleting", ["pod-running"], [], S.FAILED, True, ["job deleted outside the node"]),
    ("job-active", ["pod-deleted"], [], S.ACTIVE, False, ["waiting for the job"]),
]


@pytest.mark.parametrize("job,pods,events,status,terminal,words", SCENARIOS,
                         ids=[f"{j}+{'+'.join(p) or 'nopods'}{'+' + '+'.join(e) if e else ''}"
                              for j, p, e, *_ in SCENARIOS])
def test_run_status(job, pods, events, status, terminal, words):
    state = run_status(load(job) if job else None, [load(p) for p in pods],
                       events=[load(e) for e in events])
    assert isinstance(state, RunState)
    assert (state.status, state.terminal) == (status, terminal), state
    for w in words:
        assert w.lower() in state.detail.lower(), state.detail


@pytest.mark.parametrize("job,pods", [("job-active", ["pod-running"]), ("job-complete", ["pod-succeeded"]),
                                      (None, []), ("job-active", ["pod-imagepullbackoff"])])
def test_killed_wins_over_everything(job, pods):
    state = run_status(load(job) if job else None, [load(p) for p in pods], killed=True)
    assert state == RunState(S.KILLED, True, state.detail, state.reason)


def test_terminal_exactly_for_final_statuses():
    from node.models import is_terminal
    for job, pods, events, *_ in SCENARIOS:
        state = run_status(load(job) if job else None, [load(p) for p in pods], events=[load(e) for e in events])
        assert state.terminal == is_terminal(state.status), (job, pods, state)


class TestUnschedulableGrace:
    since = datetime(2024, 6, 3, 10, 15, 2, tzinfo=timezone.utc)   # the fixture's lastTransitionTime

    def state(self, now):
        return run_status(load("job-active"), [load("pod-unschedulable")], now=now,
                          unschedulable_grace_seconds=60)

    def test_pending_within_the_grace(self):
        state = self.state(self.since + timedelta(seconds=59))
        assert (state.status, state.terminal, state.reason) == (S.PENDING, False, "Unschedulable")
        assert "Insufficient nvidia.com/gpu" in state.detail

    def test_start_failed_after_the_grace(self):
        state = self.state(self.since + timedelta(seconds=60))
        assert (state.status, state.terminal) == (S.START_FAILED, True)

    def test_without_a_clock_it_waits(self):
        assert self.state(None).terminal is False


def test_a_refusal_recorded_for_an_earlier_job_of_the_same_name_is_not_this_jobs():
    event = load("event-failedcreate-podsecurity")
    event["involvedObject"]["uid"] = "0e9f8a7b-0000-4000-8000-000000000000"
    assert run_status(load("job-active"), [], events=[event]).status == S.PENDING


def test_an_events_k8s_io_v1_refusal_is_read_too():
    core = load("event-failedcreate-quota")
    event = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "type": "Warning",
             "reason": core["reason"], "note": core["message"], "regarding": core["involvedObject"],
             "reportingController": "job-controller", "action": "",
             "metadata": core["metadata"], "eventTime": "2024-06-03T10:15:02.000000Z"}
    kubernetes_validate.validate(event, "1.30", strict=True)
    state = run_status(load("job-active"), [], events=[event])
    assert (state.status, state.reason) == (S.START_FAILED, "FailedCreate")
    assert "exceeded quota" in state.detail


def test_newest_pod_decides_progress():
    old = load("pod-failed-exit3")
    new = load("pod-running")
    new["metadata"]["name"] = "v6-run-42-b8q4z"
    new["metadata"]["creationTimestamp"] = "2024-06-03T10:16:00Z"
    assert run_status(load("job-active"), [new, old]).status == S.ACTIVE
    assert run_status(load("job-active"), [old, new]).status == S.ACTIVE


def test_image_error_on_a_retry_pod_fails_the_run():
    # with backoffLimit > 0 an earlier pod may have failed; a later one that cannot pull still fails fast
    old = load("pod-failed-exit3")
    new = load("pod-imagepullbackoff")
    new["metadata"]["name"] = "v6-run-42-b8q4z"
    assert run_status(load("job-active"), [old, new]).status == S.NO_DOCKER_IMAGE


def test_failed_mount_of_another_pod_is_ignored():
    event = load("event-failedmount")
    event["involvedObject"]["name"] = "v6-run-7-abcde"
    assert run_status(load("job-active"), [load("pod-containercreating")], events=[event]).status \
        == S.INITIALIZING


def test_failed_mount_in_events_k8s_io_shape():
    core = load("event-failedmount")
    new_style = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "type": "Warning", "reason": "FailedMount",
                 "note": core["message"], "regarding": core["involvedObject"], "metadata": core["metadata"],
                 "eventTime": "2024-06-03T10:15:03.000000Z", "reportingController": "kubelet",
                 "reportingInstance": "worker-1", "action": "MountVolume"}
    kubernetes_validate.validate(new_style, "1.30", strict=True)
    state = run_status(load("job-active"), [load("pod-containercreating")], events=[new_style])
    assert (state.status, state.terminal) == (S.START_FAILED, True)


def test_garbage_does_not_raise():
    job = load("job-active")
    broken_pod = {"metadata": None, "status": {"containerStatuses": [None, {"state": "x"}], "conditions": "x"}}
    state = run_status(job, [broken_pod, "not a pod"], events=[None, {"type": "Warning"}])
    assert state.terminal is False


def test_inputs_are_not_modified():
    job, pod = load("job-backofflimit"), load("pod-oomkilled")
    before = copy.deepcopy((job, pod))
    run_status(job, [pod])
    assert (job, pod) == before
