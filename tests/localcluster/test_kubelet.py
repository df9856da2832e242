"""The kubelet on an in-process store: pod lifecycle, status, events, volumes, errors, deletion."""
from __future__ import annotations

import base64
import os

import pytest

from localcluster.kubelet.kubelet import LogError, read_log
from localcluster.apiserver.resources import CONFIGMAPS, PODS, SECRETS

from .kubelet_fixtures import needs_root, run_in_process, share_host_dir, simple_pod


def _phase(h, name):
    return ((h.pod(name) or {}).get("status") or {}).get("phase")


def _waiting_reason(h, name, init=False):
    return (h.container_state(name, init=init).get("waiting") or {}).get("reason")


def test_a_pod_runs_to_success_with_the_status_and_events_of_a_kubelet(tmp_path):
    async def body(h):
        h.store.create(PODS, "default", simple_pod("ok", args=["echo out; echo err >&2"]))
        await h.until(lambda: _phase(h, "ok") == "Succeeded", what="Succeeded")
        pod = h.pod("ok")
        status = pod["status"]
        assert pod["spec"]["nodeName"] == "localcluster"
        assert status["podIP"].startswith("127.0.1.") and status["hostIP"] == "127.0.0.1"
        assert status["podIPs"] == [{"ip": status["podIP"]}]
        conds = {c["type"]: c for c in status["conditions"]}
        assert conds["PodScheduled"]["status"] == "True"
        assert conds["Initialized"]["status"] == "True"
        assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "PodCompleted"
        assert all(c["lastTransitionTime"] for c in conds.values())
        cs = status["containerStatuses"][0]
        term = cs["state"]["terminated"]
        assert (term["exitCode"], term["reason"]) == (0, "Completed")
        assert cs["containerID"].startswith("local://") and cs["imageID"].startswith("test/sh@")
        assert (cs["ready"], cs["restartCount"], cs["image"]) == (False, 0, "test/sh")
        reasons = [e["reason"] for e in h.events("ok")]
        for r in ("Scheduled", "Pulled", "Created", "Started"):
            assert r in reasons
        assert all(e["involvedObject"]["uid"] == pod["metadata"]["uid"] for e in h.events("ok"))
        assert read_log(h.state_dir, pod) == "out\nerr\n"
        assert read_log(h.state_dir, pod, "main", tail_lines=1) == "err\n"
        with pytest.raises(LogError, match='previous terminated container "main" in pod "ok"'):
            read_log(h.state_dir, pod, previous=True)
        stamped = read_log(h.state_dir, pod, timestamps=True)
        assert stamped.splitlines()[0].endswith("Z out")
    run_in_process(tmp_path, body)


def test_a_failing_container_fails_the_pod_with_its_exit_code(tmp_path):
    async def body(h):
        h.store.create(PODS, "default", simple_pod("bad", args=["exit 3"]))
        await h.until(lambda: _phase(h, "bad") == "Failed", what="Failed")
        term = h.container_state("bad")["terminated"]
        assert (term["exitCode"], term["reason"]) == (3, "Error")
    run_in_process(tmp_path, body)


def test_an_unknown_image_alternates_err_image_pull_and_image_pull_back_off(tmp_path):
    async def body(h):
        h.store.create(PODS, "default", simple_pod("pull", image="nope/missing:1"))
        await h.until(lambda: _waiting_reason(h, "pull") == "ErrImagePull", what="ErrImagePull")
        assert "pull access denied" in h.container_state("pull")["waiting"]["message"]
        await h.until(lambda: _waiting_reason(h, "pull") == "ImagePullBackOff",
                      what="ImagePullBackOff")
        assert h.container_state("pull")["waiting"]["message"] == \
            'Back-off pulling image "nope/missing:1"'
        assert _phase(h, "pull") == "Pending"
        events = {(e["type"], e["reason"]) for e in h.events("pull")}
        assert {("Normal", "Pulling"), ("Warning", "Failed"), ("Normal", "BackOff")} <= events
    run_in_process(tmp_path, body)


def test_an_unparsable_image_is_invalid_image_name(tmp_path):
    async def body(h):
        h.store.create(PODS, "default", simple_pod("inv", image="Bad Image"))
        await h.until(lambda: _waiting_reason(h, "inv") == "InvalidImageName")
    run_in_process(tmp_path, body)


def test_a_gpu_request_stays_pending_unschedulable(tmp_path):
    async def body(h):
        h.store.create(PODS, "default", simple_pod(
            "gpu", resources={"limits": {"nvidia.com/gpu": 1}}))

        def unschedulable():
            conds = (h.pod("gpu").get("status") or {}).get("conditions") or []
            return [c for c in conds if c["type"] == "PodScheduled" and c["status"] == "False"]
        cond = (await h.until(unschedulable, what="PodScheduled False"))[0]
        assert cond["reason"] == "Unschedulable"
        assert cond["message"].startswith("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
        assert not h.pod("gpu")["spec"].get("nodeName")
        assert _phase(h, "gpu") == "Pending"
        ev = [e for e in h.events("gpu") if e["reason"] == "FailedScheduling"]
        assert ev and ev[0]["type"] == "Warning"
    run_in_process(tmp_path, body)


@needs_root
def test_a_missing_host_path_directory_is_failed_mount_until_it_appears(tmp_path):
    data = tmp_path / "data"

    async def body(h):
        pod = simple_pod("mnt", image="test/python",
                         args=["-c", "print(open('/app/in/x.txt').read())"],
                         volumeMounts=[{"name": "in", "mountPath": "/app/in", "readOnly": True}])
        pod["spec"]["volumes"] = [{"name": "in", "hostPath": {"path": str(data),
                                                               "type": "Directory"}}]
        h.store.create(PODS, "default", pod)
        ev = await h.until(lambda: [e for e in h.events("mnt") if e["reason"] == "FailedMount"],
                           what="FailedMount")
        assert ev[0]["type"] == "Warning"
        assert ev[0]["message"] == (f'MountVolume.SetUp failed for volume "in" : hostPath type '
                                    f"check failed: {data} is not a directory")
        assert _waiting_reason(h, "mnt") == "ContainerCreating" and _phase(h, "mnt") == "Pending"
        data.mkdir()
        (data / "x.txt").write_text("from the host")
        await h.until(lambda: _phase(h, "mnt") == "Succeeded", what="Succeeded")
        assert read_log(h.state_dir, h.pod("mnt")) == "from the host\n"
    run_in_process(tmp_path, body)


def test_a_missing_secret_for_env_is_create_container_config_error_until_created(tmp_path):
    async def body(h):
        h.store.create(PODS, "default", simple_pod(
            "sec", args=["echo $TOKEN"],
            env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}}}]))
        await h.until(lambda: _waiting_reason(h, "sec") == "CreateContainerConfigError")
        assert h.container_state("sec")["waiting"]["message"] == 'secret "s" not found'
        h.store.create(SECRETS, "default", {"metadata": {"name": "s"},
                                            "data": {"t": base64.b64encode(b"abc").decode()}})
        await h.until(lambda: _phase(h, "sec") == "Succeeded")
        assert read_log(h.state_dir, h.pod("sec")) == "abc\n"
    run_in_process(tmp_path, body)


def test_run_as_non_root_with_a_root_image_is_refused(tmp_path):
    async def body(h):
        pod = simple_pod("nr", image="test/root-python", args=["-c", "pass"])
        pod["spec"]["securityContext"] = {"runAsNonRoot": True}
        h.store.create(PODS, "default", pod)
        await h.until(lambda: _waiting_reason(h, "nr") == "CreateContainerConfigError")
        assert h.container_state("nr")["waiting"]["message"].startswith(
            "container has runAsNonRoot and image will run as root")
    run_in_process(tmp_path, body)


def test_on_failure_restarts_in_place_with_the_last_state(tmp_path):
    marker = tmp_path / "ran-once"

    async def body(h):
        h.store.create(PODS, "default", share_host_dir(simple_pod(
            "again", restart="OnFailure",
            args=[f"if [ -e {marker} ]; then echo second; exit 0; fi; touch {marker}; exit 4"]),
            tmp_path))
        await h.until(lambda: _phase(h, "again") == "Succeeded", what="Succeeded")
        cs = h.pod("again")["status"]["containerStatuses"][0]
        assert cs["restartCount"] == 1
        assert cs["lastState"]["terminated"]["exitCode"] == 4
        assert read_log(h.state_dir, h.pod("again")) == "second\n"
        assert read_log(h.state_dir, h.pod("again"), previous=True) == ""  # first run: silent
        assert any(e["reason"] == "BackOff" for e in h.events("again"))
    run_in_process(tmp_path, body)


@needs_root
def test_init_containers_run_first_and_share_an_empty_dir_and_volumes_from_objects(tmp_path):
    async def body(h):
        h.store.create(CONFIGMAPS, "default", {"metadata": {"name": "cm"},
                                               "data": {"greeting": "hi"}})
        h.store.create(SECRETS, "default", {"metadata": {"name": "sec"},
                                            "data": {"pw": base64.b64encode(b"pw1").decode()}})
        pod = simple_pod("init", image="test/sh", args=[
            "cat /work/step; cat /cfg/greeting; echo; cat /sec/pw; echo; cat /work/sub/f"],
            volumeMounts=[{"name": "work", "mountPath": "/work"},
                          {"name": "cm", "mountPath": "/cfg"},
                          {"name": "sec", "mountPath": "/sec"}])
        pod["spec"]["initContainers"] = [
            {"name": "first", "image": "test/sh", "args": ["echo one > /w/step"],
             "volumeMounts": [{"name": "work", "mountPath": "/w"}]},
            {"name": "second", "image": "test/sh", "args": ["echo two > /s/f"],
             "volumeMounts": [{"name": "work", "mountPath": "/s", "subPath": "sub"}]}]
        pod["spec"]["volumes"] = [{"name": "work", "emptyDir": {}},
                                  {"name": "cm", "configMap": {"name": "cm"}},
                                  {"name": "sec", "secret": {"secretName": "sec"}}]
        h.store.create(PODS, "default", pod)
        await h.until(lambda: _phase(h, "init") in ("Succeeded", "Failed"), what="finished")
        assert _phase(h, "init") == "Succeeded", h.pod("init")["status"]
        assert read_log(h.state_dir, h.pod("init")) == "one\nhi\npw1\ntwo\n"
        inits = h.pod("init")["status"]["initContainerStatuses"]
        assert [s["state"]["terminated"]["exitCode"] for s in inits] == [0, 0]
        uid = h.pod("init")["metadata"]["uid"]
        assert (h.state_dir / "pod-volumes" / uid).exists()
        h.store.delete(PODS, "default", "init")
        await h.until(lambda: not (h.state_dir / "pod-volumes" / uid).exists(),
                      what="emptyDir removed with the pod")
    run_in_process(tmp_path, body)


def test_a_failing_init_container_fails_a_never_restarting_pod(tmp_path):
    async def body(h):
        pod = simple_pod("initbad", args=["echo main"])
        pod["spec"]["initContainers"] = [{"name": "i", "image": "test/sh", "args": ["exit 2"]}]
        h.store.create(PODS, "default", pod)
        await h.until(lambda: _phase(h, "initbad") == "Failed", what="Failed")
        assert h.container_state("initbad", init=True)["terminated"]["exitCode"] == 2
        assert "running" not in h.container_state("initbad")
        assert "terminated" not in h.container_state("initbad")
    run_in_process(tmp_path, body)


def test_deleting_a_running_pod_stops_it_and_removes_it(tmp_path):
    pidfile = tmp_path / "pid"

    async def body(h):
        h.store.create(PODS, "default", share_host_dir(simple_pod(
            "long", args=[f"echo $$$$ > {pidfile}; trap 'exit 0' TERM; "
                          "while true; do sleep 0.05; done"]), tmp_path))
        await h.until(pidfile.exists, what="container running")
        await h.until(lambda: "running" in h.container_state("long"))
        pid = int(pidfile.read_text())
        uid = h.pod("long")["metadata"]["uid"]
        h.store.delete(PODS, "default", "long")
        await h.until(lambda: h.pod("long") is None, what="pod removed")
        assert not os.path.exists(f"/proc/{pid}/status") or "Z" in open(
            f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        assert any(e["reason"] == "Killing" for e in h.events("long"))
        assert not any(p.name.endswith(uid) for p in (h.state_dir / "pods").iterdir())
    run_in_process(tmp_path, body)


def test_env_from_the_downward_api_and_expansion_in_args(tmp_path):
    async def body(h):
        h.store.create(PODS, "default", simple_pod(
            "env", image="test/python",
            args=["-c", "import os, sys; print(os.environ['IP'], sys.argv[1], os.getuid())",
                  "$(NAME)-x"],
            env=[{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                 {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]))
        await h.until(lambda: _phase(h, "env") in ("Succeeded", "Failed"))
        pod = h.pod("env")
        expected_uid = 1000 if os.geteuid() == 0 else os.geteuid()
        assert read_log(h.state_dir, pod) == f"{pod['status']['podIP']} env-x {expected_uid}\n"
    run_in_process(tmp_path, body)


def test_stopping_the_controllers_stops_every_pod_process(tmp_path):
    pidfile = tmp_path / "pid"
    pids = []

    async def body(h):
        h.store.create(PODS, "default", share_host_dir(simple_pod(
            # $$$$: Kubernetes expansion turns $$ into $, so the shell sees $$
            "forever", args=[f"echo $$$$ > {pidfile}; while true; do sleep 0.05; done"]),
            tmp_path))
        await h.until(pidfile.exists, what="container running")
        await h.until(lambda: pidfile.read_text().strip())
        pids.append(int(pidfile.read_text()))
    run_in_process(tmp_path, body)
    stat = f"/proc/{pids[0]}/stat"
    assert not os.path.exists(stat) or open(stat).read().rsplit(")", 1)[1].split()[0] == "Z"


def test_logs_of_a_container_that_has_not_started_are_an_error(tmp_path):
    async def body(h):
        h.store.create(PODS, "default", simple_pod("nolog", image="nope/missing"))
        await h.until(lambda: _waiting_reason(h, "nolog") in ("ErrImagePull", "ImagePullBackOff"))
        with pytest.raises(LogError, match='container "main" in pod "nolog" is waiting to start'):
            read_log(h.state_dir, h.pod("nolog"))
        with pytest.raises(LogError, match="container other is not valid for pod nolog"):
            read_log(h.state_dir, h.pod("nolog"), "other")
    run_in_process(tmp_path, body)



def test_a_pods_own_active_deadline_kills_it_and_fails_it(tmp_path):
    async def body(h):
        pod = simple_pod("dl", args=["sleep 60"])
        pod["spec"]["activeDeadlineSeconds"] = 1
        h.store.create(PODS, "default", pod)
        await h.until(lambda: _phase(h, "dl") == "Failed", what="Failed")
        status = h.pod("dl")["status"]
        assert (status["reason"], status["message"]) == (
            "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
        assert "terminated" in h.container_state("dl")
    run_in_process(tmp_path, body)


def test_without_root_a_pod_with_volumes_is_create_container_error(tmp_path, monkeypatch):
    from localcluster.runtime.process import ProcessRuntime
    monkeypatch.setattr(ProcessRuntime, "__init__", _non_root_init(ProcessRuntime.__init__))

    async def body(h):
        pod = simple_pod("nr", args=["true"],
                         volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}])
        pod["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
        h.store.create(PODS, "default", pod)
        h.store.create(PODS, "default", simple_pod("plain", args=["echo fine"]))
        await h.until(lambda: _waiting_reason(h, "nr") == "CreateContainerError")
        assert "volumes need root for mount namespaces" in \
            h.container_state("nr")["waiting"]["message"]
        await h.until(lambda: _phase(h, "plain") == "Succeeded")
    run_in_process(tmp_path, body)


def _non_root_init(original):
    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.root = False  # as when the cluster runs without root
    return init


def test_a_native_sidecar_runs_alongside_and_ends_with_the_main_container(tmp_path):
    flag = tmp_path / "sidecar-up"

    async def body(h):
        pod = simple_pod("side", args=[f"while [ ! -e {flag} ]; do sleep 0.02; done; echo main"])
        pod["spec"]["initContainers"] = [
            {"name": "helper", "image": "test/sh", "restartPolicy": "Always",
             "args": [f"touch {flag}; trap 'exit 0' TERM; while true; do sleep 0.05; done"]}]
        h.store.create(PODS, "default", share_host_dir(pod, tmp_path))
        await h.until(lambda: _phase(h, "side") in ("Succeeded", "Failed"), what="finished")
        assert _phase(h, "side") == "Succeeded"
        await h.until(lambda: "terminated" in h.container_state("side", init=True),
                      what="sidecar stopped")
        assert read_log(h.state_dir, h.pod("side")) == "main\n"
    run_in_process(tmp_path, body)


def test_pods_deleted_while_their_containers_start_leave_no_process(tmp_path):
    async def body(h):
        names = [f"race-{i}" for i in range(6)]
        for name in names:
            h.store.create(PODS, "default", simple_pod(name, args=["sleep 60"]))
        for name in names:
            await h.until(lambda n=name: (h.pod(n) or {}).get("spec", {}).get("nodeName"))
            h.store.delete(PODS, "default", name)
        await h.until(lambda: all(h.pod(n) is None for n in names), what="pods removed")
    run_in_process(tmp_path, body)
    # the suite's no_leftovers fixture fails this test if a container process survived


def test_a_forced_delete_kills_the_container_at_once(tmp_path):
    pidfile = tmp_path / "pid"

    async def body(h):
        # ignores SIGTERM: only SIGKILL ends it before its 60s grace period
        pod = simple_pod("forced", args=[f"echo $$$$ > {pidfile}; trap '' TERM; "
                                         "while true; do sleep 0.05; done"])
        pod["spec"]["terminationGracePeriodSeconds"] = 60
        h.store.create(PODS, "default", share_host_dir(pod, tmp_path))
        await h.until(lambda: pidfile.exists() and pidfile.read_text().strip())
        pid = int(pidfile.read_text())
        h.store.delete(PODS, "default", "forced")  # graceful: SIGTERM, ignored
        h.store.delete(PODS, "default", "forced", grace_period_seconds=0)
        assert h.pod("forced") is None
        await h.until(lambda: not _running(pid), timeout=20, what="killed before the grace period")
    run_in_process(tmp_path, body)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_an_unschedulable_pod_is_scheduled_once_resources_are_freed(tmp_path):
    release = tmp_path / "release"

    async def body(h):
        big = {"requests": {"cpu": "40"}}  # the node has 64 cpus by default
        h.store.create(PODS, "default", share_host_dir(simple_pod(
            "first", args=[f"while [ ! -e {release} ]; do sleep 0.05; done"], resources=big),
            tmp_path))
        await h.until(lambda: "running" in h.container_state("first"), what="first running")
        h.store.create(PODS, "default", simple_pod("second", args=["true"], resources=big))
        await h.until(lambda: any(e["reason"] == "FailedScheduling" for e in h.events("second")))
        assert "1 Insufficient cpu" in h.events("second")[0]["message"]
        release.touch()
        await h.until(lambda: _phase(h, "second") == "Succeeded", what="second ran")
    run_in_process(tmp_path, body)
