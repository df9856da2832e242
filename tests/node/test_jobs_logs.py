"""Which container logs go into a result: all of the run's, the live sidecar's only on trouble."""
from __future__ import annotations

import copy
import threading
from pathlib import Path

import yaml

from node.jobs import JobOps
from node.manifests import SIDECAR_NAME

FIXTURES = Path(__file__).parent / "fixtures"


class _Cluster:
    """Answers pod_log with the container's name; records what was asked."""

    def __init__(self):
        self.asked: list[tuple[str, str]] = []

    def pod_log(self, pod: str, container: str, limit_bytes: int) -> str:
        self.asked.append((pod, container))
        return f"log of {container}"


def _with_live_sidecar(exit_code: int) -> dict:
    # a recorded pod whose sidecar ran and ended; here it is the live sidecar
    pod = copy.deepcopy(yaml.safe_load((FIXTURES / "pod-service-done.yaml").read_text()))
    pod["spec"]["initContainers"][0]["name"] = SIDECAR_NAME
    status = pod["status"]["initContainerStatuses"][0]
    status["name"] = SIDECAR_NAME
    status["state"]["terminated"]["exitCode"] = exit_code
    return pod


def _logs(pod: dict) -> tuple[str, list[str]]:
    cluster = _Cluster()
    text = JobOps(cluster, config=None, stop=threading.Event()).logs(
        {pod["metadata"]["name"]: pod})
    return text, [c for _, c in cluster.asked]


def test_a_cleanly_ended_live_sidecar_is_not_read():
    text, asked = _logs(_with_live_sidecar(0))
    assert asked == ["algorithm"]
    assert "container algorithm ===\nlog of algorithm" in text and SIDECAR_NAME not in text


def test_a_live_sidecar_that_failed_is_read_and_shown():
    text, asked = _logs(_with_live_sidecar(1))
    assert asked == [SIDECAR_NAME, "algorithm"]
    assert f"container {SIDECAR_NAME} ===\nlog of {SIDECAR_NAME}" in text


def test_other_sidecars_are_always_read():
    pod = yaml.safe_load((FIXTURES / "pod-service-done.yaml").read_text())
    _, asked = _logs(pod)
    assert asked == ["service", "algorithm"]
