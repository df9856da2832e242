"""The kubelet behind a served local cluster, through the official Kubernetes client."""
from __future__ import annotations

import errno
import uuid

import kubernetes
import pytest

from localcluster.testing import wait_until

from .kubelet_fixtures import kcluster, needs_root  # noqa: F401 - kcluster is a fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def core(kcluster):  # noqa: F811
    return kubernetes.client.CoreV1Api(kcluster.api_client())


@pytest.fixture
def ns(core):
    name = "k-" + uuid.uuid4().hex[:8]
    core.create_namespace({"metadata": {"name": name}})
    return name


def _pod(name, image="test/sh", args=None, **container):
    c = {"name": "main", "image": image, **container}
    if args is not None:
        c["args"] = args
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                     "containers": [c]}}


def _phase(core, ns, name):
    return core.read_namespaced_pod(name, ns).status.phase


def test_logs_are_readable_after_the_pod_ended(core, ns):
    core.create_namespaced_pod(ns, _pod("logs", args=["echo line1; echo line2"]))
    wait_until(lambda: _phase(core, ns, "logs") == "Succeeded", 15, "Succeeded")
    assert core.read_namespaced_pod_log("logs", ns) == "line1\nline2\n"
    assert core.read_namespaced_pod_log("logs", ns, container="main", tail_lines=1) == "line2\n"
    pod = core.read_namespaced_pod("logs", ns)
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (0, "Completed")
    assert pod.status.pod_ip.startswith("127.0.1.")


def test_an_unknown_image_is_stuck_in_image_pull_back_off(core, ns):
    core.create_namespaced_pod(ns, _pod("pull", image="nope/unknown:1.0"))

    def reason():
        cs = core.read_namespaced_pod("pull", ns).status.container_statuses
        return cs and cs[0].state.waiting and cs[0].state.waiting.reason
    wait_until(lambda: reason() == "ImagePullBackOff", 15, "ImagePullBackOff")
    assert _phase(core, ns, "pull") == "Pending"
    events = core.list_namespaced_event(ns, field_selector="involvedObject.name=pull").items
    assert any(e.reason == "Failed" and "ErrImagePull" in e.message for e in events)


def test_a_gpu_request_is_unschedulable(core, ns):
    core.create_namespaced_pod(ns, _pod("gpu", resources={"limits": {"nvidia.com/gpu": "1"}}))

    def scheduled_condition():
        conds = core.read_namespaced_pod("gpu", ns).status.conditions or []
        return next((c for c in conds if c.type == "PodScheduled"), None)
    cond = wait_until(scheduled_condition, 15, "PodScheduled condition")
    assert (cond.status, cond.reason) == ("False", "Unschedulable")
    assert "1 Insufficient nvidia.com/gpu" in cond.message
    assert _phase(core, ns, "gpu") == "Pending"


@needs_root
def test_host_path_input_is_read_at_the_mount_path_and_read_only_is_honoured(core, ns, tmp_path):
    data = tmp_path / "db"
    data.mkdir()
    (data / "employees.csv").write_text("name,age\nann,41\n")
    probe = ("import sys\n"
             "print(open('/app/input/csv/default/employees.csv').read().splitlines()[1])\n"
             "try:\n    open('/app/input/csv/default/x', 'w')\n"
             "except OSError as e:\n    print('errno', e.errno)\n")
    pod = _pod("mnt", image="test/python", args=["-c", probe],
               volumeMounts=[{"name": "db", "mountPath": "/app/input/csv/default",
                              "readOnly": True}])
    pod["spec"]["volumes"] = [{"name": "db", "hostPath": {"path": str(data),
                                                          "type": "Directory"}}]
    core.create_namespaced_pod(ns, pod)
    wait_until(lambda: _phase(core, ns, "mnt") in ("Succeeded", "Failed"), 15, "finished")
    assert core.read_namespaced_pod_log("mnt", ns) == f"ann,41\nerrno {errno.EROFS}\n"
    assert _phase(core, ns, "mnt") == "Succeeded"
    assert sorted(p.name for p in data.iterdir()) == ["employees.csv"]


def test_deleting_a_pod_through_the_api_stops_and_removes_it(core, ns):
    core.create_namespaced_pod(ns, _pod("del", args=["trap 'exit 0' TERM; "
                                                     "while true; do sleep 0.05; done"]))
    wait_until(lambda: _phase(core, ns, "del") == "Running", 15, "Running")
    core.delete_namespaced_pod("del", ns)

    def gone():
        try:
            core.read_namespaced_pod("del", ns)
        except kubernetes.client.ApiException as e:
            return e.status == 404
        return False
    wait_until(gone, 15, "pod removed")
