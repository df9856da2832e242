"""Native sidecars (init containers with restartPolicy Always) as KEP-753 runs them: the next
container starts only once a sidecar is started (its startupProbe passed), its readiness counts
for the pod's only, sidecars stop after the containers in reverse order, and a sidecar that never
starts leaves the pod initializing until its deadline. In-process store, real kubelet, process
runtime and Job controller; order is asserted with the order of the Events, never with time."""
from __future__ import annotations

import pytest

from localcluster.apiserver.resources import JOBS, PODS

from .kubelet_fixtures import run_in_process, share_host_dir
from .probe_fixtures import (LOOP, condition, cstatus, fast, first_rv, free_port, messages,
                             pod_of, server, status)


def test_a_sidecar_startup_probe_gates_the_next_init_container_and_main(tmp_path):
    go, end = tmp_path / "go", tmp_path / "end"

    async def body(h):
        port = free_port()
        side = server("side", port, "--listen-after", str(go), restartPolicy="Always",
                      startupProbe=fast({"tcpSocket": {"port": "http"}}, failureThreshold=60))
        init_b = {"name": "init-b", "image": "test/sh", "args": ["echo b"]}
        main = {"name": "main", "image": "test/sh",
                "args": [f"while [ ! -e {end} ]; do sleep 0.02; done"]}
        h.store.create(PODS, "default", share_host_dir(pod_of("gated", [main], [side, init_b]),
                                                       tmp_path))
        await h.until(lambda: messages(h, "gated", "Unhealthy", "side"), what="a failed probe")
        cs = cstatus(h, "gated", "side")
        assert "running" in cs["state"] and cs["started"] is False and cs["ready"] is False
        assert not messages(h, "gated", "Started", "init-b")
        assert not messages(h, "gated", "Started", "main")
        assert status(h, "gated")["phase"] == "Pending"
        assert condition(h, "gated", "Initialized")["message"] == \
            "containers with incomplete status: [side init-b]"
        go.touch()
        await h.until(lambda: "running" in cstatus(h, "gated", "main").get("state", {}),
                      what="main running")
        cs = cstatus(h, "gated", "side")
        assert cs["started"] is True and cs["ready"] is True
        assert cstatus(h, "gated", "init-b")["ready"] is True  # completed: ready, as the kubelet
        assert condition(h, "gated", "Ready").get("status") == "True"
        assert (first_rv(h, "gated", "Started", "side") < first_rv(h, "gated", "Unhealthy", "side")
                < first_rv(h, "gated", "Started", "init-b")
                < first_rv(h, "gated", "Started", "main"))
        end.touch()
        await h.until(lambda: status(h, "gated").get("phase") == "Succeeded", what="done")
    run_in_process(tmp_path, body)


def test_a_sidecar_readiness_probe_does_not_gate_the_start_but_the_pod_readiness(tmp_path):
    end = tmp_path / "end"

    async def body(h):
        side = {"name": "side", "image": "test/sh", "restartPolicy": "Always", "args": [LOOP],
                "readinessProbe": fast({"exec": {"command": ["false"]}})}
        main = {"name": "main", "image": "test/sh",
                "args": [f"while [ ! -e {end} ]; do sleep 0.02; done"]}
        h.store.create(PODS, "default", share_host_dir(pod_of("unready", [main], [side]),
                                                       tmp_path))
        await h.until(lambda: cstatus(h, "unready", "main").get("ready")
                      and messages(h, "unready", "Unhealthy", "side"), what="main ready")
        assert cstatus(h, "unready", "side")["started"] is True
        assert cstatus(h, "unready", "side")["ready"] is False
        assert status(h, "unready")["phase"] == "Running"
        assert condition(h, "unready", "Initialized")["status"] == "True"
        assert condition(h, "unready", "Ready")["message"] == \
            "containers with unready status: [side]"
        end.touch()
        await h.until(lambda: status(h, "unready").get("phase") == "Succeeded", what="done")
    run_in_process(tmp_path, body)


@pytest.mark.parametrize("ending", ["main exits", "pod deleted"])
def test_sidecars_stop_after_the_containers_in_reverse_order(tmp_path, ending):
    record = tmp_path / "record"

    def trapping(name: str) -> str:
        # records its first SIGTERM (the process runtime signals the process group and every
        # process of the container: sh may see two); marks when the trap is set
        return (f"trap 'trap \"\" TERM; echo {name} >> {record}; exit 0' TERM; "
                f"touch {tmp_path}/up-{name}; "
                f"while true; do sleep 0.05; done")

    async def body(h):
        sides = [{"name": n, "image": "test/sh", "restartPolicy": "Always",
                  "args": [trapping(n)]} for n in ("s1", "s2")]
        wait_sides = f"while [ ! -e {tmp_path}/up-s1 ] || [ ! -e {tmp_path}/up-s2 ]; do " \
                     f"sleep 0.02; done; "
        if ending == "main exits":
            main_args = wait_sides + f"echo main >> {record}"
        else:
            main_args = wait_sides + trapping("main")
        main = {"name": "main", "image": "test/sh", "args": [main_args]}
        h.store.create(PODS, "default", share_host_dir(pod_of("order", [main], sides), tmp_path))
        if ending == "pod deleted":
            await h.until(lambda: (tmp_path / "up-main").exists(), what="main running")
            h.store.delete(PODS, "default", "order")
            await h.until(lambda: h.pod("order") is None, what="pod removed")
        else:
            await h.until(lambda: status(h, "order").get("phase") == "Succeeded"
                          and "terminated" in cstatus(h, "order", "s1").get("state", {}),
                          what="all stopped")
        assert record.read_text().split() == ["main", "s2", "s1"]
    run_in_process(tmp_path, body)


def test_a_sidecar_that_never_starts_keeps_the_pod_initializing_until_its_deadline(tmp_path):
    async def body(h):
        side = {"name": "side", "image": "test/sh", "restartPolicy": "Always", "args": [LOOP],
                "startupProbe": fast({"tcpSocket": {"port": free_port()}}, failureThreshold=2)}
        main = {"name": "main", "image": "test/sh", "args": ["echo never"]}
        h.store.create(PODS, "default", pod_of("stuck", [main], [side],
                                               activeDeadlineSeconds=6))
        await h.until(lambda: cstatus(h, "stuck", "side").get("restartCount", 0) >= 1
                      and "running" in cstatus(h, "stuck", "side")["state"],
                      what="the sidecar restarted", timeout=20)
        assert status(h, "stuck")["phase"] == "Pending"
        assert cstatus(h, "stuck", "side")["started"] is False
        assert "waiting" in cstatus(h, "stuck", "main")["state"]
        await h.until(lambda: status(h, "stuck").get("phase") == "Failed", what="failed",
                      timeout=20)
        st = status(h, "stuck")
        assert st["reason"] == "DeadlineExceeded"
        assert not messages(h, "stuck", "Started", "main")
        assert "running" not in cstatus(h, "stuck", "side")["state"]  # stopped or backing off
        assert cstatus(h, "stuck", "side")["restartCount"] >= 1
    run_in_process(tmp_path, body)


def test_a_job_whose_sidecar_never_starts_fails_with_deadline_exceeded(tmp_path):
    async def body(h):
        side = {"name": "side", "image": "test/sh", "restartPolicy": "Always", "args": [LOOP],
                "startupProbe": fast({"tcpSocket": {"port": free_port()}}, failureThreshold=2)}
        job = {"metadata": {"name": "stuckjob"}, "spec": {
            "backoffLimit": 0, "activeDeadlineSeconds": 4, "template": {"spec": {
                "restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                "initContainers": [side],
                "containers": [{"name": "main", "image": "test/sh", "args": ["echo never"]}]}}}}
        h.store.create(JOBS, "default", job)

        def failed():
            st = (h.store.try_get(JOBS, "default", "stuckjob") or {}).get("status") or {}
            return next((c for c in st.get("conditions") or []
                         if c["type"] == "Failed" and c["status"] == "True"), None)
        cond = await h.until(failed, what="the Job failed", timeout=20)
        assert cond["reason"] == "DeadlineExceeded"
    run_in_process(tmp_path, body)


