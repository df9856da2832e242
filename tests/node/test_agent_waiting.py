"""The agent on runs whose pod does not come: a Job whose pod the cluster refused (a FailedCreate
event on the Job, no pod) ends at once with the refusal; an unschedulable pod is reported as
pending with the scheduler's reason and fails once the configured grace has passed."""
from __future__ import annotations

import copy
import time
from datetime import datetime, timezone

import pytest

from node import agent as agent_module
from node.models import TaskStatus as S
from tests.node.test_status import load
from tests.reliability.harness import Harness, _event


def rich(run_id: int, **extra) -> dict:
    return {"run_id": run_id, "task_id": run_id, "image": "v6-demo/avg", "databases": [],
            "token": "t0ken-for-tests", "input": {"method": "avg"}, **extra}


@pytest.fixture
def h(tmp_path):
    # grace 2 s: the condition's lastTransitionTime has whole seconds, so up to 1 s of it may
    # be gone when the pod is first seen
    harness = Harness(tmp_path, job={"deadline_seconds": 300, "unschedulable_grace_seconds": 2})
    yield harness
    harness.close()


@pytest.fixture
def h_patient(tmp_path):
    """A grace no test outlasts."""
    harness = Harness(tmp_path, job={"deadline_seconds": 300, "unschedulable_grace_seconds": 300})
    yield harness
    harness.close()


def _started(h, run_id: int) -> str:
    h.command(rich(run_id))
    name = f"v6-run-{run_id}-node-a"
    h.agent._handle(("event", "jobs", _event("ADDED", h.cluster.get_job(name))))
    return name


def _refusal(job_name: str) -> dict:
    event = load("event-failedcreate-podsecurity")  # the Job controller's, recorded shape
    event["involvedObject"].update(name=job_name, uid=None)
    return event


def _age(h, run_id: int, seconds: float) -> None:
    """As if the Job had been without a pod for `seconds` already."""
    h.agent.runs[run_id].podless_since = time.monotonic() - seconds


def test_a_refused_pod_ends_the_run_with_the_refusal_once_the_job_has_no_pod_for_a_moment(h):
    name = _started(h, 1)
    h.cluster.events.append(_refusal(name))
    h.agent._check_events()
    assert h.cluster.job_event_reads == []  # just created: a pod may still come
    _age(h, 1, agent_module.PODLESS_AFTER)
    h.agent._check_events()
    assert h.cluster.job_event_reads == [name]
    result = h.results()[1]
    assert result["status"] == S.START_FAILED.value
    assert 'violates PodSecurity "baseline:latest": hostPath volumes' in result["logs"]
    last = h.reporter.statuses[-1]
    assert (last.status, last.run_id) == (S.START_FAILED.value, 1)
    assert "the cluster refused to create the pod" in last.detail
    assert name not in h.cluster.jobs  # cleaned up like any finished run


def test_the_events_of_a_podless_job_are_read_at_most_every_few_seconds(h):
    name = _started(h, 2)
    _age(h, 2, agent_module.PODLESS_AFTER)
    for _ in range(5):
        h.agent._check_events()
    assert h.cluster.job_event_reads == [name]
    assert 2 not in h.results()
    h.agent.runs[2].job_events_read -= agent_module.JOB_EVENTS_EVERY
    h.cluster.events.append(_refusal(name))
    h.agent._check_events()
    assert h.cluster.job_event_reads == [name, name]
    assert h.results()[2]["status"] == S.START_FAILED.value


def _unschedulable_pod(job_name: str, run_id: int, since: datetime) -> dict:
    pod = load("pod-unschedulable")
    pod["metadata"]["labels"].update({"v6.run-id": str(run_id), "v6.task-id": str(run_id),
                                      "job-name": job_name})
    pod["metadata"]["name"] = f"{job_name}-7xk2p"
    pod["status"]["conditions"][0]["lastTransitionTime"] = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    return pod


def test_a_run_with_a_pod_never_reads_its_jobs_events(h_patient):
    h = h_patient
    name = _started(h, 3)
    pod = _unschedulable_pod(name, 3, datetime.now(timezone.utc))
    h.cluster.pods[pod["metadata"]["name"]] = pod
    h.agent._handle(("event", "pods", _event("ADDED", copy.deepcopy(pod))))
    assert h.agent.runs[3].pods  # still waiting, with its pod
    _age(h, 3, 10)
    h.agent._check_events()
    assert h.cluster.job_event_reads == []


def test_an_unschedulable_pod_is_pending_with_the_reason_then_fails_after_the_grace(h):
    name = _started(h, 4)
    pod = _unschedulable_pod(name, 4, datetime.now(timezone.utc))
    h.cluster.pods[pod["metadata"]["name"]] = pod
    h.agent._handle(("event", "pods", _event("ADDED", copy.deepcopy(pod))))
    report = h.reporter.statuses[-1]
    assert report.status == S.PENDING.value
    assert report.detail.startswith("Unschedulable: 0/1 nodes are available: 1 Insufficient "
                                    "nvidia.com/gpu.")
    assert 4 not in h.results()
    # nothing in the cluster changes: the agent's timer must end the run (grace 2 s, counted
    # from the condition's lastTransitionTime, which has whole seconds)
    deadline = time.monotonic() + 10
    while 4 not in h.results():
        assert time.monotonic() < deadline, "the run did not fail after its grace"
        h.agent._recheck_waiting()
        time.sleep(0.05)
    result = h.results()[4]
    assert result["status"] == S.START_FAILED.value
    assert "Insufficient nvidia.com/gpu" in result["logs"]
    pending = [r for r in h.reporter.statuses if r.run_id == 4 and r.status == S.PENDING.value]
    assert [r.detail.split(":")[0] for r in pending] == ["job created", "Unschedulable"]


def test_event_reads_per_check_are_bounded_and_go_to_the_runs_read_longest_ago(h):
    names = [_started(h, r) for r in range(10, 30)]
    for r in range(10, 30):
        _age(h, r, agent_module.PODLESS_AFTER)
    budget = agent_module.EVENT_READS_PER_CHECK
    h.agent._check_events()
    assert len(h.cluster.job_event_reads) == budget
    h.agent._check_events()
    h.agent._check_events()
    # each run once: those not read yet came first, however many runs wait
    assert sorted(h.cluster.job_event_reads) == sorted(names)
    for r in range(10, 30):
        h.agent.runs[r].job_events_read -= agent_module.JOB_EVENTS_EVERY
    h.agent._check_events()
    assert len(h.cluster.job_event_reads) == len(names) + budget
