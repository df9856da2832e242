"""How a companion service that never became ready reads as the run's status (CONTRACTS §10),
over pods and Jobs recorded from the local cluster (tests/node/fixtures/*-service-*.yaml, made by
running the node's own manifests with the query service; each file says what it shows)."""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import yaml

from node.companion import SERVICE_ANNOTATION
from node.models import TaskStatus as S
from node.status import run_status

FIXTURES = Path(__file__).parent / "fixtures"


@functools.lru_cache(maxsize=None)
def _fixture(name: str) -> dict:
    return yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())


def fixture(name: str) -> dict:
    return copy.deepcopy(_fixture(name))


def service_status(pod: dict) -> dict:
    [cs] = [c for c in pod["status"]["initContainerStatuses"] if c["name"] == "service"]
    return cs


def test_fixtures_are_what_their_names_say():
    # guards the scenarios below against a re-recording that caught another moment
    assert service_status(fixture("pod-service-starting"))["state"].keys() == {"running"}
    assert service_status(fixture("pod-service-starting"))["started"] is False
    assert service_status(fixture("pod-service-notready"))["lastState"]["terminated"]
    assert service_status(fixture("pod-service-ready"))["started"] is True
    assert service_status(fixture("pod-service-done"))["state"].keys() == {"terminated"}
    assert fixture("pod-service-deadline")["metadata"]["deletionTimestamp"]
    for name in ("pod-service-starting", "pod-service-notready", "pod-service-deadline"):
        assert fixture(name)["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == \
            "PodInitializing"


def test_a_pod_waiting_for_its_service_is_initializing():
    state = run_status(fixture("job-service-notready"), [fixture("pod-service-starting")])
    assert (state.status, state.terminal) == (S.INITIALIZING, False)


def test_a_service_that_never_became_ready_fails_the_run_at_its_first_kill():
    # the Job is still active: the kubelet would restart the service for ever
    state = run_status(fixture("job-service-notready"), [fixture("pod-service-notready")])
    assert (state.status, state.terminal, state.reason) == (S.FAILED, True, "ServiceNotReady")
    assert state.detail == ("companion service v6-demo/query-service did not become ready within 3s "
                            "(startup probe failed 3 times: HTTP GET /nope on port 18101)"), state.detail


def test_a_service_that_exits_before_it_is_ready_says_so():
    pod = fixture("pod-service-notready")
    last = service_status(pod)["lastState"]["terminated"]
    last.update(exitCode=3, reason="Error", message="cannot listen", finishedAt=last["startedAt"])
    state = run_status(fixture("job-service-notready"), [pod])
    assert (state.status, state.terminal) == (S.FAILED, True)
    assert state.detail.startswith("companion service v6-demo/query-service exited with code 3 before it "
                                   "became ready (HTTP GET /nope on port 18101)")
    assert "cannot listen" in state.detail


def test_a_service_that_exits_cleanly_at_once_is_not_taken_for_a_probe_kill():
    pod = fixture("pod-service-notready")
    last = service_status(pod)["lastState"]["terminated"]
    assert last["exitCode"] == 0  # the recorded kill: the service stops cleanly on SIGTERM
    last.update(finishedAt=last["startedAt"])
    state = run_status(fixture("job-service-notready"), [pod])
    assert "exited with code 0 before it became ready" in state.detail, state.detail


def test_a_killed_service_reads_as_not_ready_whatever_its_runtime():
    pod = fixture("pod-service-notready")
    last = service_status(pod)["lastState"]["terminated"]
    last.update(exitCode=137, finishedAt=last["startedAt"])
    state = run_status(fixture("job-service-notready"), [pod])
    assert "did not become ready within 3s" in state.detail


def test_the_runs_deadline_passing_before_the_service_is_ready_names_the_service():
    state = run_status(fixture("job-service-deadline"), [fixture("pod-service-deadline")])
    assert (state.status, state.terminal, state.reason) == (S.FAILED, True, "ServiceNotReady")
    assert state.detail.startswith("companion service v6-demo/query-service never became ready "
                                   "(HTTP GET /nope on port 18103): DeadlineExceeded"), state.detail


def test_a_ready_service_changes_nothing():
    assert not run_status(fixture("job-service-notready"), [fixture("pod-service-ready")]).terminal
    state = run_status(fixture("job-service-done"), [fixture("pod-service-done")])
    assert (state.status, state.terminal) == (S.COMPLETED, True)


def test_a_service_stopped_after_the_algorithm_ran_is_not_blamed():
    # the algorithm ran (so the service was ready once): the Job's own word decides
    pod = fixture("pod-service-done")
    service_status(pod)["state"]["terminated"].update(exitCode=137)
    job = fixture("job-service-notready")
    assert run_status(job, [pod]).status == S.ACTIVE


def test_a_service_image_that_cannot_be_pulled_is_named():
    pod = fixture("pod-service-starting")
    service_status(pod)["state"] = {"waiting": {"reason": "ErrImagePull",
                                                "message": "image v6-demo/query-service not found"}}
    state = run_status(fixture("job-service-notready"), [pod])
    assert (state.status, state.terminal) == (S.NO_DOCKER_IMAGE, True)
    assert state.detail.startswith("companion service v6-demo/query-service: ErrImagePull")


def test_pods_without_the_annotation_are_read_as_before():
    pod = fixture("pod-service-notready")
    del pod["metadata"]["annotations"][SERVICE_ANNOTATION]
    assert not run_status(fixture("job-service-notready"), [pod]).terminal
