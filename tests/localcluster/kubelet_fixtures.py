"""Helpers for the kubelet and Job controller tests.

`InProcess` runs the controllers on a `Store` in this process (fast, no HTTP); `kcluster` is a
served LocalCluster with the test images (tests/localcluster/kubelet_images.yaml).
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Awaitable, Callable

import pytest

from localcluster.controllers import run_controllers
from localcluster.apiserver.resources import EVENTS, PODS
from localcluster.apiserver.store import Store

TEST_IMAGES = Path(__file__).resolve().parent / "kubelet_images.yaml"
def needs_root(test):
    """Marks a test `root` and skips it without root (volumes need mount namespaces)."""
    return pytest.mark.root(pytest.mark.skipif(os.geteuid() != 0,
                                               reason="mount namespaces need root")(test))


class InProcess:
    def __init__(self, store: Store, state_dir: Path) -> None:
        self.store = store
        self.state_dir = state_dir

    async def until(self, pred: Callable[[], object], timeout: float = 15.0,
                    what: str = "condition"):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = pred()
            if value:
                return value
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.02)

    def pod(self, name: str, ns: str = "default") -> dict | None:
        return self.store.try_get(PODS, ns, name)

    def container_state(self, name: str, ns: str = "default", init: bool = False) -> dict:
        pod = self.pod(name, ns) or {}
        key = "initContainerStatuses" if init else "containerStatuses"
        statuses = (pod.get("status") or {}).get(key) or [{}]
        return statuses[0].get("state") or {}

    def events(self, name: str, ns: str = "default") -> list[dict]:
        return [e for e in self.store.list(EVENTS, ns)[0]
                if e["involvedObject"]["name"] == name]


def run_in_process(tmp_path: Path, body: Callable[[InProcess], Awaitable[None]]) -> None:
    """Run body against a Store with the controllers; everything is stopped afterwards."""
    async def go():
        store = Store()
        task = asyncio.ensure_future(run_controllers(store, tmp_path, [TEST_IMAGES]))
        try:
            await body(InProcess(store, tmp_path))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            store.close()
    asyncio.run(go())


def simple_pod(name: str, image: str = "test/sh", args: list[str] | None = None,
               restart: str = "Never", **container) -> dict:
    c = {"name": "main", "image": image, **container}
    if args is not None:
        c["args"] = args
    return {"metadata": {"name": name}, "spec": {"restartPolicy": restart, "containers": [c],
                                                 "terminationGracePeriodSeconds": 5}}


@pytest.fixture(scope="module")
def kcluster():
    from localcluster.testing import LocalCluster
    with LocalCluster(images=[TEST_IMAGES]) as lc:
        yield lc


def share_host_dir(pod: dict, path: Path) -> dict:
    """Mount host directory `path` at the same path in every container of the pod, so a test
    and its containers can exchange files (a container's own writes stay in its private root).
    Without root there are no mount namespaces and the path is shared anyway."""
    if os.geteuid() != 0:
        return pod
    spec = pod["spec"]
    spec.setdefault("volumes", []).append(
        {"name": "shared", "hostPath": {"path": str(path), "type": "Directory"}})
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        c.setdefault("volumeMounts", []).append({"name": "shared", "mountPath": str(path)})
    return pod
