"""pods/log through the official client, with the cluster's kubelet running a local image."""
from __future__ import annotations

import kubernetes
import pytest
import yaml
from kubernetes.client import ApiException

from localcluster.testing import LocalCluster, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def logging_cluster(tmp_path):
    images = tmp_path / "images.yaml"
    images.write_text(yaml.safe_dump({"images": {"test/echo": {
        "entrypoint": ["{python}", "-c",
                       "import sys; print('line one'); print('line two'); "
                       "print('oops', file=sys.stderr)"],
        "cmd": [], "user": 1000}}}))
    with LocalCluster(images=[images]) as lc:
        yield lc


def test_pod_log(logging_cluster):
    core = kubernetes.client.CoreV1Api(logging_cluster.api_client())
    core.create_namespaced_pod("default", {"metadata": {"name": "echo"}, "spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "test/echo"}]}})
    wait_until(lambda: core.read_namespaced_pod("echo", "default").status.phase == "Succeeded",
               timeout=20, what="the pod to succeed")
    text = core.read_namespaced_pod_log("echo", "default")
    assert sorted(text.splitlines()) == ["line one", "line two", "oops"]
    assert core.read_namespaced_pod_log("echo", "default", tail_lines=1).count("\n") == 1
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod_log("echo", "default", container="nope")
    assert e.value.status == 400
    core.delete_namespaced_pod("echo", "default")
    wait_until(lambda: not core.list_namespaced_pod("default").items, what="pod removal")


def test_follow_streams_while_the_container_runs_and_ends_with_it(tmp_path):
    images = tmp_path / "images.yaml"
    images.write_text(yaml.safe_dump({"images": {"test/slow": {
        "entrypoint": ["{python}", "-u", "-c",
                       "import time; print('one'); time.sleep(5); print('two')"],
        "cmd": [], "user": 1000}}}))
    with LocalCluster(images=[images]) as lc:
        core = kubernetes.client.CoreV1Api(lc.api_client())
        core.create_namespaced_pod("default", {"metadata": {"name": "slow"}, "spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "test/slow"}]}})
        wait_until(lambda: core.read_namespaced_pod("slow", "default").status.phase == "Running",
                   timeout=20, what="the pod to run")
        stream = core.read_namespaced_pod_log("slow", "default", follow=True,
                                              _preload_content=False)
        try:
            lines = stream.stream(amt=64)
            first = next(lines)
            assert first.startswith(b"one\n")
            # the first line came while the container still runs: it was streamed, not read after
            assert core.read_namespaced_pod("slow", "default").status.phase == "Running"
            rest = b"".join(lines)  # ends when the container does
        finally:
            stream.release_conn()
        assert (first + rest).decode().splitlines() == ["one", "two"]
        assert core.read_namespaced_pod("slow", "default").status.phase == "Succeeded"
