"""Images the registry marks ``fake`` under the process runtime: their pods are run by the fake
runtime (a loopback IP of their own, a hosted live sidecar), every other pod as before."""
from __future__ import annotations

import ipaddress
import uuid

import kubernetes
import pytest

from localcluster.testing import LocalCluster, wait_until

from .kubelet_fixtures import TEST_IMAGES
from .test_fake_runtime import FAKE_NET, ended, live_pod, read


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    images = tmp_path_factory.mktemp("images") / "fake.yaml"
    images.write_text("images:\n  test/fake: {fake: {delay: 300ms, exit-code: 0}}\n")
    with LocalCluster(images=[TEST_IMAGES, images]) as lc:
        yield lc


@pytest.fixture
def core(mixed):
    return kubernetes.client.CoreV1Api(mixed.api_client())


@pytest.fixture
def ns(core):
    name = "m-" + uuid.uuid4().hex[:8]
    core.create_namespace({"metadata": {"name": name}})
    return name


def _pod(name: str, image: str) -> dict:
    return {"metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                     "containers": [{"name": "main", "image": image}]}}


def test_fake_images_run_fake_and_others_as_processes(core, ns):
    core.create_namespaced_pod(ns, _pod("fake", "test/fake"))
    core.create_namespaced_pod(ns, _pod("real", "test/sh"))
    fake = wait_until(lambda: ended(core, ns, "fake"), 30, "the fake pod to end")
    real = wait_until(lambda: ended(core, ns, "real"), 30, "the real pod to end")
    assert fake.status.phase == real.status.phase == "Succeeded"
    assert ipaddress.ip_address(fake.status.pod_ip) in FAKE_NET
    assert ipaddress.ip_address(real.status.pod_ip) not in FAKE_NET
    assert "fake container main ran 300ms, exit 0" in core.read_namespaced_pod_log("fake", ns)
    assert core.read_namespaced_pod_log("real", ns).strip() == "hello"
    # the node still says it runs processes
    node = core.read_node("localcluster")
    assert node.status.node_info.container_runtime_version == "process://localcluster"


def test_a_fake_image_with_the_live_sidecar_is_a_fake_pod_with_a_hosted_sidecar(core, ns):
    body = live_pod("live", 21, {})
    body["spec"]["containers"][0]["image"] = "test/fake"
    core.create_namespaced_pod(ns, body)
    p = wait_until(lambda: ended(core, ns, "live"), 30, "the pod to end")
    assert p.status.phase == "Succeeded"
    assert ipaddress.ip_address(p.status.pod_ip) in FAKE_NET
    log = core.read_namespaced_pod_log("live", ns, container="live")
    assert "hosted by the fake runtime on " + p.status.pod_ip in log
    assert read(core, ns, "live").status.init_container_statuses[0].state.terminated.exit_code == 0
