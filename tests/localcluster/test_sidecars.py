"""Init containers, native sidecars (init containers with restartPolicy Always) and the downward
API pod IP, as the node's algorithm pods use them (a live-channel sidecar next to the algorithm),
on an in-process store with the real kubelet and Job controller."""
from __future__ import annotations

from localcluster.kubelet.kubelet import read_log
from localcluster.apiserver.resources import JOBS, PODS

from .kubelet_fixtures import needs_root, run_in_process, share_host_dir, simple_pod

LOOP = "trap 'exit 0' TERM; while true; do sleep 0.05; done"


def _phase(h, name):
    return ((h.pod(name) or {}).get("status") or {}).get("phase")


def _init_status(h, pod: str, container: str) -> dict:
    for cs in ((h.pod(pod) or {}).get("status") or {}).get("initContainerStatuses") or []:
        if cs["name"] == container:
            return cs
    return {}


def test_init_containers_run_in_order_and_a_sidecar_starts_before_the_later_ones(tmp_path):
    """[init-a (runs to completion), sidecar (started, keeps running), init-b] then main:
    the sidecar starts only after init-a, and runs alongside init-b and main."""
    marks = tmp_path

    async def body(h):
        pod = simple_pod("order", args=[f"test -e {marks}/side && test -e {marks}/b "
                                        f"&& echo main-saw-all"])
        pod["spec"]["initContainers"] = [
            {"name": "init-a", "image": "test/sh", "args": [f"touch {marks}/a"]},
            {"name": "side", "image": "test/sh", "restartPolicy": "Always",
             "args": [f"test -e {marks}/a || exit 3; touch {marks}/side; {LOOP}"]},
            # a started sidecar need not have done anything yet (no startupProbe): init-b
            # waits for its mark, which it would never see if the sidecar were not running
            {"name": "init-b", "image": "test/sh",
             "args": [f"while [ ! -e {marks}/side ]; do sleep 0.02; done; touch {marks}/b"]}]
        h.store.create(PODS, "default", share_host_dir(pod, tmp_path))
        await h.until(lambda: _phase(h, "order") in ("Succeeded", "Failed"), what="finished")
        assert _phase(h, "order") == "Succeeded"
        assert read_log(h.state_dir, h.pod("order")) == "main-saw-all\n"
        await h.until(lambda: "terminated" in _init_status(h, "order", "side").get("state", {}),
                      what="the sidecar stopped after main")
        a = _init_status(h, "order", "init-a")["state"]["terminated"]
        b = _init_status(h, "order", "init-b")["state"]["terminated"]
        assert a["exitCode"] == 0 and b["exitCode"] == 0
        assert _init_status(h, "order", "side")["restartCount"] == 0
    run_in_process(tmp_path, body)


@needs_root
def test_a_sidecar_gets_the_pod_ip_and_shares_an_empty_dir_with_the_main_container(tmp_path):
    async def body(h):
        pod = simple_pod("shared", args=["while [ ! -s /live/ip ]; do sleep 0.02; done; "
                                         "cat /live/ip; echo from-main >> /live/log"],
                         volumeMounts=[{"name": "live", "mountPath": "/live"}])
        pod["spec"]["volumes"] = [{"name": "live", "emptyDir": {"sizeLimit": "16Mi"}}]
        pod["spec"]["initContainers"] = [{
            "name": "side", "image": "test/sh", "restartPolicy": "Always",
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            "volumeMounts": [{"name": "live", "mountPath": "/live"}],
            "args": ["echo $POD_IP > /live/ip.tmp && mv /live/ip.tmp /live/ip; "
                     "trap 'cat /live/log; exit 0' TERM; while true; do sleep 0.05; done"]}]
        h.store.create(PODS, "default", pod)
        await h.until(lambda: _phase(h, "shared") == "Succeeded", what="main done")
        ip = h.pod("shared")["status"]["podIP"]
        assert ip
        assert read_log(h.state_dir, h.pod("shared")) == f"{ip}\n"
        # the sidecar saw the main container's write in the shared volume when it was stopped
        await h.until(lambda: "terminated" in _init_status(h, "shared", "side").get("state", {}),
                      what="sidecar stopped")
        side_log = read_log(h.state_dir, h.pod("shared"), container="side")
        assert side_log.splitlines()[-1:] == ["from-main"]  # (sh may also say "Terminated")
    run_in_process(tmp_path, body)


def test_a_crashing_sidecar_is_restarted_while_the_main_container_runs(tmp_path):
    crashed, release = tmp_path / "crashed", tmp_path / "release"

    async def body(h):
        pod = simple_pod("restarts", args=[f"while [ ! -e {release} ]; do sleep 0.02; done"])
        pod["spec"]["initContainers"] = [{
            "name": "side", "image": "test/sh", "restartPolicy": "Always",
            "args": [f"if [ ! -e {crashed} ]; then touch {crashed}; exit 1; fi; {LOOP}"]}]
        h.store.create(PODS, "default", share_host_dir(pod, tmp_path))
        await h.until(lambda: _init_status(h, "restarts", "side").get("restartCount", 0) >= 1
                      and "running" in _init_status(h, "restarts", "side")["state"],
                      what="the sidecar restarted and running", timeout=20)
        assert _phase(h, "restarts") in ("Pending", "Running")
        release.touch()
        await h.until(lambda: _phase(h, "restarts") == "Succeeded", what="main done")
    run_in_process(tmp_path, body)


def test_a_job_with_a_sidecar_completes_when_its_main_container_ends(tmp_path):
    async def body(h):
        job = {"metadata": {"name": "withside"}, "spec": {"backoffLimit": 0, "template": {
            "metadata": {"labels": {"app": "t"}},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                     "initContainers": [{"name": "side", "image": "test/sh",
                                         "restartPolicy": "Always", "args": [LOOP]}],
                     "containers": [{"name": "main", "image": "test/sh",
                                     "args": ["echo work"]}]}}}}
        h.store.create(JOBS, "default", job)

        def complete():
            status = (h.store.try_get(JOBS, "default", "withside") or {}).get("status") or {}
            return any(c["type"] == "Complete" and c["status"] == "True"
                       for c in status.get("conditions") or [])
        await h.until(complete, what="the Job complete", timeout=20)
        status = h.store.get(JOBS, "default", "withside")["status"]
        assert status.get("succeeded") == 1 and not status.get("failed")
    run_in_process(tmp_path, body)


def test_the_pod_turns_succeeded_only_once_its_sidecar_has_stopped(tmp_path):
    # as the kubelet since 1.27: a terminal phase is written only when no container runs any
    # more, so whoever sees Succeeded knows the sidecar is gone too
    async def body(h):
        pod = simple_pod("done", args=["echo work"])
        pod["spec"]["terminationGracePeriodSeconds"] = 5
        pod["spec"]["initContainers"] = [{"name": "side", "image": "test/sh",
                                          "restartPolicy": "Always",
                                          "args": ["trap 'sleep 0.3; exit 0' TERM; "
                                                   "while true; do sleep 0.05; done"]}]
        seen = []  # (phase, the sidecar's state keys) of every update, in order

        def record(etype, res, obj):
            if res == PODS and obj["metadata"]["name"] == "done":
                st = obj.get("status") or {}
                side = next((cs for cs in st.get("initContainerStatuses") or []
                             if cs["name"] == "side"), {})
                seen.append((st.get("phase"), set((side.get("state") or {}))))
        h.store.subscribe(record)
        try:
            h.store.create(PODS, "default", pod)
            await h.until(lambda: _phase(h, "done") == "Succeeded", what="Succeeded", timeout=20)
        finally:
            h.store.unsubscribe(record)
        assert ("Running", {"running"}) in seen
        assert all(state != {"running"} for phase, state in seen if phase == "Succeeded"), seen
        assert "terminated" in _init_status(h, "done", "side")["state"]
    run_in_process(tmp_path, body)
