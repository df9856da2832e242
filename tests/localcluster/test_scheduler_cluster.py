"""Nodes and the scheduler behind a served local cluster, through the official client: the
kubelet's Node, pods bound by default-scheduler or by a POSTed Binding, pods that fit nowhere
(Unschedulable, the real scheduler's message, FailedScheduling) and scheduled once they fit."""
from __future__ import annotations

import json
import uuid

import kubernetes
import pytest
from kubernetes.client.rest import ApiException

from localcluster.testing import LocalCluster, wait_until

from .kubelet_fixtures import TEST_IMAGES

pytestmark = pytest.mark.integration

NODE = "localcluster"


@pytest.fixture(scope="module")
def lc():
    with LocalCluster(images=[TEST_IMAGES], extra_args=["--gpus", "1", "--cpu", "4",
                                                        "--memory", "8Gi"]) as cluster:
        yield cluster


@pytest.fixture
def core(lc):
    return kubernetes.client.CoreV1Api(lc.api_client())


@pytest.fixture
def ns(core):
    name = "s-" + uuid.uuid4().hex[:8]
    core.create_namespace({"metadata": {"name": name}})
    return name


def _pod(name, args="true", **spec):
    resources = spec.pop("resources", None)
    c = {"name": "main", "image": "test/sh", "args": [args]}
    if resources:
        c["resources"] = resources
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "containers": [c], **spec}}


def _scheduled(core, ns, name):
    conds = core.read_namespaced_pod(name, ns).status.conditions or []
    return next((c for c in conds if c.type == "PodScheduled"), None)


def _unschedulable(core, ns, name):
    cond = wait_until(lambda: _scheduled(core, ns, name), 15, f"{name}: PodScheduled")
    assert (cond.status, cond.reason) == ("False", "Unschedulable"), cond
    return cond.message


def _failed_scheduling(core, ns, name):
    return [e for e in core.list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name},reason=FailedScheduling").items]


def test_the_kubelet_registers_its_node_as_a_real_kubelet(core):
    nodes = core.list_node().items
    assert [n.metadata.name for n in nodes] == [NODE]
    node = core.read_node(NODE)
    assert node.status.allocatable == node.status.capacity
    assert {k: node.status.allocatable[k] for k in ("cpu", "memory", "nvidia.com/gpu")} == \
        {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"}
    assert int(node.status.allocatable["pods"]) > 0
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("True", "KubeletReady")
    assert ready.last_heartbeat_time is not None
    assert {(a.type, a.address) for a in node.status.addresses} == {("InternalIP", "127.0.0.1"),
                                                                   ("Hostname", NODE)}
    info = node.status.node_info
    assert info.kubelet_version.startswith("v1.30.")
    assert (info.operating_system, info.architecture) == ("linux", node.metadata.labels[
        "kubernetes.io/arch"])
    assert info.container_runtime_version
    assert node.metadata.labels["kubernetes.io/hostname"] == NODE
    assert node.metadata.labels["kubernetes.io/os"] == "linux"
    with pytest.raises(ApiException) as e:
        core.read_node("nope")
    assert e.value.status == 404
    assert json.loads(e.value.body)["message"] == 'nodes "nope" not found'
    by_field = core.list_node(field_selector=f"metadata.name={NODE}").items
    assert len(by_field) == 1


def test_a_pod_is_bound_by_default_scheduler_and_runs(core, ns):
    core.create_namespaced_pod(ns, _pod("plain"))
    wait_until(lambda: core.read_namespaced_pod("plain", ns).status.phase == "Succeeded", 15,
               "Succeeded")
    pod = core.read_namespaced_pod("plain", ns)
    assert pod.spec.node_name == NODE
    assert _scheduled(core, ns, "plain").status == "True"
    scheduled = [e for e in core.list_namespaced_event(
        ns, field_selector="involvedObject.name=plain,reason=Scheduled").items]
    assert [e.message for e in scheduled] == [f"Successfully assigned {ns}/plain to {NODE}"]
    assert scheduled[0].reporting_component == "default-scheduler"


def test_a_second_gpu_pod_waits_until_the_first_one_ends(core, ns, tmp_path):
    gpu = {"limits": {"nvidia.com/gpu": "1"}}
    release = tmp_path / "release"
    core.create_namespaced_pod(ns, _pod(
        "gpu-1", f"while [ ! -e {release} ]; do sleep 0.05; done", resources=gpu))
    wait_until(lambda: core.read_namespaced_pod("gpu-1", ns).status.phase == "Running", 15,
               "gpu-1 running")
    core.create_namespaced_pod(ns, _pod("gpu-2", resources=gpu))
    message = _unschedulable(core, ns, "gpu-2")
    assert message == ("0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 "
                       "nodes are available: 1 No preemption victims found for incoming pod.")
    events = wait_until(lambda: _failed_scheduling(core, ns, "gpu-2"), 10, "FailedScheduling")
    assert (events[0].type, events[0].message) == ("Warning", message)
    assert events[0].reporting_component == "default-scheduler"
    pod = core.read_namespaced_pod("gpu-2", ns)
    assert (pod.status.phase, pod.spec.node_name) == ("Pending", None)
    release.touch()  # the first pod ends: its GPU is free again
    wait_until(lambda: core.read_namespaced_pod("gpu-2", ns).status.phase == "Succeeded", 15,
               "gpu-2 ran")
    assert _scheduled(core, ns, "gpu-2").status == "True"


def test_a_pod_asking_more_than_the_node_has_names_every_shortfall(core, ns):
    core.create_namespaced_pod(ns, _pod("huge", resources={"requests": {"cpu": "5", "memory": "9Gi"}}))
    assert _unschedulable(core, ns, "huge").startswith(
        "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory. preemption:")


def test_a_node_selector_nothing_matches(core, ns):
    core.create_namespaced_pod(ns, _pod("sel", nodeSelector={"disktype": "ssd"}))
    assert _unschedulable(core, ns, "sel") == (
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. "
        "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.")


def test_a_cordoned_node_takes_new_pods_again_once_uncordoned(core, ns):
    core.patch_node(NODE, {"spec": {"unschedulable": True}})
    try:
        core.create_namespaced_pod(ns, _pod("later"))
        assert "1 node(s) were unschedulable." in _unschedulable(core, ns, "later")
    finally:
        core.patch_node(NODE, {"spec": {"unschedulable": None}})
    # a change of the Node is what wakes the waiting pod: no retry timer is that fast
    wait_until(lambda: core.read_namespaced_pod("later", ns).spec.node_name == NODE, 5,
               "bound after the uncordon")


def _bind(core, ns, name, node=NODE, kind="Node"):
    body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": kind, "name": node}}
    # _preload_content=False: the client would read the answer as a Binding, but the API server
    # answers with a Status (a known quirk of the generated client)
    resp = core.create_namespaced_pod_binding(name, ns, body, _preload_content=False)
    return resp.status, json.loads(resp.data)


def test_a_pod_of_another_scheduler_is_left_alone_until_a_binding_is_posted(core, ns):
    core.create_namespaced_pod(ns, _pod("manual", schedulerName="my-scheduler"))
    pod = core.read_namespaced_pod("manual", ns)
    assert pod.spec.node_name is None and not pod.status.conditions
    with pytest.raises(ApiException) as e:
        _bind(core, ns, "manual", kind="Pod")
    assert e.value.status == 422
    assert _bind(core, ns, "manual") == (201, {"kind": "Status", "apiVersion": "v1",
                                               "metadata": {}, "status": "Success", "code": 201})
    wait_until(lambda: core.read_namespaced_pod("manual", ns).status.phase == "Succeeded", 15,
               "ran once bound")
    assert _scheduled(core, ns, "manual").status == "True"
    with pytest.raises(ApiException) as e:
        _bind(core, ns, "manual")
    status = json.loads(e.value.body)
    assert (e.value.status, status["reason"]) == (409, "Conflict")
    assert status["message"] == ('Operation cannot be fulfilled on pods/binding "manual": pod '
                                 f'manual is already assigned to node "{NODE}"')
    with pytest.raises(ApiException) as e:
        _bind(core, ns, "missing")
    assert e.value.status == 404


def test_binding_is_create_only(lc, ns):
    import requests
    r = requests.get(f"{lc.server}/api/v1/namespaces/{ns}/pods/x/binding",
                     headers={"Authorization": f"Bearer {lc.token}"}, verify=lc.verify, timeout=10)
    assert r.status_code == 405
    assert r.json()["reason"] == "MethodNotAllowed"


def test_discovery_lists_nodes_and_pods_binding(core):
    resources = {r.name: r for r in core.get_api_resources().resources}
    assert resources["nodes"].namespaced is False and "no" in resources["nodes"].short_names
    assert (resources["pods/binding"].kind, resources["pods/binding"].verbs) == ("Binding", ["create"])
    assert "nodes/status" in resources
