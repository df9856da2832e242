"""The fake runtime in a served cluster (``serve --runtime fake``): Jobs complete or fail as their
annotations say, bad annotations are a CreateContainerError, deletion is prompt, many pods are
cheap and get unique loopback IPs, and the node's live sidecar is a real one, hosted."""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import uuid
from pathlib import Path

import kubernetes
import pytest
import zmq

from localcluster.runtime.fake_spec import PREFIX
from localcluster.testing import LocalCluster, wait_until
from node import live_frames as F

FAKE_NET = ipaddress.ip_network("127.80.0.0/12")


@pytest.fixture(scope="module")
def fcluster():
    with LocalCluster(runtime="fake") as lc:
        yield lc


@pytest.fixture
def apis(fcluster):
    client = fcluster.api_client()
    return kubernetes.client.CoreV1Api(client), kubernetes.client.BatchV1Api(client)


@pytest.fixture
def ns(apis):
    name = "f-" + uuid.uuid4().hex[:8]
    apis[0].create_namespace({"metadata": {"name": name}})
    return name


def pod(name: str, notes: dict | None = None, containers=("main",), **spec) -> dict:
    return {"metadata": {"name": name, "annotations": {PREFIX + k: v
                                                        for k, v in (notes or {}).items()}},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 30,
                     "containers": [{"name": c, "image": "v6-demo/avg"} for c in containers],
                     **spec}}


def job(name: str, notes: dict) -> dict:
    template = pod(name, notes)
    del template["metadata"]["name"]  # the Job controller names its pods
    return {"metadata": {"name": name}, "spec": {"backoffLimit": 0, "template": template}}


def read(core, ns, name):
    try:
        return core.read_namespaced_pod(name, ns)
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return None
        raise


def ended(core, ns, name):
    p = read(core, ns, name)
    return p if p is not None and p.status.phase in ("Succeeded", "Failed") else None


def job_condition(batch, ns, name):
    conditions = batch.read_namespaced_job(name, ns).status.conditions or []
    return next((c for c in conditions if c.type in ("Complete", "Failed")
                 and c.status == "True"), None)


def job_pod(core, ns, name):
    pods = core.list_namespaced_pod(ns, label_selector=f"job-name={name}").items
    return pods[0] if pods else None


def test_a_job_runs_for_its_delay_and_completes_with_exit_0(apis, ns):
    core, batch = apis
    batch.create_namespaced_job(ns, job("ok", {"delay": "2s"}))
    running = wait_until(lambda: (p := job_pod(core, ns, "ok")) and p.status.phase == "Running"
                         and p.status.container_statuses[0].state.running and p, 30,
                         "the pod running")
    assert ipaddress.ip_address(running.status.pod_ip) in FAKE_NET
    assert running.status.pod_i_ps[0].ip == running.status.pod_ip
    condition = wait_until(lambda: job_condition(batch, ns, "ok"), 30, "the Job to end")
    assert condition.type == "Complete"
    p = job_pod(core, ns, "ok")
    term = p.status.container_statuses[0].state.terminated
    assert (p.status.phase, term.exit_code, term.reason) == ("Succeeded", 0, "Completed")
    assert term.finished_at - term.started_at >= dt.timedelta(seconds=1)  # (whole seconds)
    text = core.read_namespaced_pod_log(p.metadata.name, ns)
    assert "fake container main started: runs 2s, then exits 0" in text
    assert "fake container main ran 2s, exit 0" in text


def test_exit_code_3_fails_the_job(apis, ns):
    core, batch = apis
    batch.create_namespaced_job(ns, job("bad", {"exit-code": "3", "delay": "200ms"}))
    condition = wait_until(lambda: job_condition(batch, ns, "bad"), 30, "the Job to end")
    assert (condition.type, condition.reason) == ("Failed", "BackoffLimitExceeded")
    p = job_pod(core, ns, "bad")
    term = p.status.container_statuses[0].state.terminated
    assert (p.status.phase, term.exit_code, term.reason) == ("Failed", 3, "Error")


def test_per_container_exit_codes_and_oom_kill(apis, ns):
    core, _ = apis
    core.create_namespaced_pod(ns, pod("two", {"exit-code": "1", "exit-code.main": "4",
                                               "oom-killed.big": "true"},
                                           containers=("main", "big")))
    p = wait_until(lambda: ended(core, ns, "two"), 30, "the pod to end")
    states = {cs.name: cs.state.terminated for cs in p.status.container_statuses}
    assert (states["main"].exit_code, states["main"].reason) == (4, "Error")
    assert (states["big"].exit_code, states["big"].reason) == (137, "OOMKilled")
    assert p.status.phase == "Failed"


def test_an_invalid_annotation_is_a_create_container_error(apis, ns):
    core, _ = apis
    core.create_namespaced_pod(ns, pod("typo", {"delay": "soon"}))

    def waiting():
        p = read(core, ns, "typo")
        w = p and p.status.container_statuses and p.status.container_statuses[0].state.waiting
        return w if w and w.reason == "CreateContainerError" else None
    w = wait_until(waiting, 30, "CreateContainerError")
    assert w.message == (f"fake runtime: annotation {PREFIX}delay: invalid duration 'soon' "
                         f"(expected e.g. 500ms, 2s, 1m30s)")
    events = core.list_namespaced_event(ns, field_selector="involvedObject.name=typo").items
    assert any(e.reason == "Failed" and "invalid duration 'soon'" in e.message for e in events)


def test_deleting_a_running_fake_pod_ends_it_at_once(apis, ns):
    core, _ = apis
    core.create_namespaced_pod(ns, pod("long", {"delay": "1h"}))
    wait_until(lambda: (p := read(core, ns, "long")) and p.status.phase == "Running", 30,
               "the pod running")
    core.delete_namespaced_pod("long", ns)  # a grace period of 30s, which is not needed
    wait_until(lambda: read(core, ns, "long") is None, 10, "the pod gone")


def test_exec_probes_succeed_while_the_container_runs(apis, ns):
    core, _ = apis
    body = pod("probed", {"delay": "1h"})
    body["spec"]["containers"][0]["readinessProbe"] = {"exec": {"command": ["check"]},
                                                       "periodSeconds": 1}
    core.create_namespaced_pod(ns, body)
    wait_until(lambda: (p := read(core, ns, "probed")) and p.status.container_statuses
               and p.status.container_statuses[0].ready, 30, "the container ready")
    core.delete_namespaced_pod("probed", ns, grace_period_seconds=0)


def _children(pid: int) -> list[list[bytes]]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if stat[1] == str(pid) and stat[0] != "Z":
                    out.append(Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0"))
            except OSError:
                continue
    return out


def test_two_hundred_pods_complete_without_processes_on_unique_loopback_ips(fcluster, apis, ns):
    core, _ = apis
    for i in range(200):
        core.create_namespaced_pod(ns, pod(f"p{i}", {"delay": "100ms"}))

    def all_done():
        pods = core.list_namespaced_pod(ns).items
        done = [p for p in pods if p.status.phase == "Succeeded"]
        return pods if len(done) == 200 else None
    pods = wait_until(all_done, 120, "200 pods to succeed", interval=0.2)
    ips = [p.status.pod_ip for p in pods]
    assert len(set(ips)) == 200
    assert all(ipaddress.ip_address(ip) in FAKE_NET for ip in ips)
    # no container process: at most the sidecar host (of another test) runs under the cluster
    others = [argv for argv in _children(fcluster._proc.pid)
              if b"localcluster.runtime.fake_sidecars" not in argv]
    assert others == []


def live_pod(name: str, run_id: int, notes: dict) -> dict:
    body = pod(name, notes)
    sidecar = {
        "name": "live", "image": "v6-demo/node", "args": ["sidecar"], "restartPolicy": "Always",
        "env": [{"name": "RUN_ID", "value": str(run_id)},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "LIVE_HEARTBEAT_SECONDS", "value": "0.2"},
                {"name": "PROGRESS_FILE", "value": "/app/live/progress"}],
        "ports": [{"name": "live-pub", "containerPort": 5555},
                  {"name": "live-rep", "containerPort": 5556}],
        "volumeMounts": [{"name": "live", "mountPath": "/app/live", "readOnly": True}],
        "startupProbe": {"tcpSocket": {"port": "live-rep"}, "periodSeconds": 1,
                         "failureThreshold": 30}}
    main = body["spec"]["containers"][0]
    main["env"] = [{"name": "PROGRESS_FILE", "value": "/app/live/progress"}]
    main["volumeMounts"] = [{"name": "live", "mountPath": "/app/live"}]
    body["spec"]["initContainers"] = [sidecar]
    body["spec"]["volumes"] = [{"name": "live", "emptyDir": {}}]
    return body


def test_the_live_sidecar_is_real_hosted_and_stopped_after_the_algorithm(fcluster, apis, ns):
    core, _ = apis
    ctx = zmq.Context.instance()
    core.create_namespaced_pod(ns, live_pod("live-a", 11, {"delay": "3s",
                                                           "progress-steps": "3"}))
    core.create_namespaced_pod(ns, live_pod("live-b", 12, {"delay": "1h"}))
    pods = [wait_until(lambda n=n: (p := read(core, ns, n)) and p.status.phase == "Running"
                       and p, 30, f"{n} running") for n in ("live-a", "live-b")]
    ip_a, ip_b = (p.status.pod_ip for p in pods)
    assert ip_a != ip_b
    sub = ctx.socket(zmq.SUB)
    req = ctx.socket(zmq.REQ)
    try:
        for sock in (sub, req):
            sock.linger = 0
        sub.setsockopt_string(zmq.SUBSCRIBE, "11")
        sub.connect(f"tcp://{ip_a}:5555")
        req.connect(f"tcp://{ip_b}:5556")
        req.send_multipart(F.encode("12", F.PING, {"after": 0}))
        assert req.poll(10_000), "the hosted sidecar did not answer"
        rid, kind, body = F.decode(req.recv_multipart())
        assert (rid, kind, body["state"]) == ("12", F.PONG, "running")

        seen = []
        while not any(k == F.HEARTBEAT and b["state"] == "stopped" for _, k, b in seen):
            assert sub.poll(15_000), f"no stopped heartbeat; saw {seen[-3:]}"
            seen.append(F.decode(sub.recv_multipart()))
        beats = [b for _, k, b in seen if k == F.HEARTBEAT]
        assert beats[0]["state"] == "running" and len(beats) >= 3
        progress = [b["message"] for _, k, b in seen if k == F.PROGRESS]
        assert progress == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]
    finally:
        sub.close()
        req.close()
    p = wait_until(lambda: ended(core, ns, "live-a"), 30, "live-a to end")
    assert p.status.phase == "Succeeded"
    term = p.status.init_container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (0, "Completed")
    assert "hosted by the fake runtime on " + ip_a in core.read_namespaced_pod_log(
        "live-a", ns, container="live")
    # one host process for every sidecar, no process per pod
    hosts = [a for a in _children(fcluster._proc.pid)
             if b"localcluster.runtime.fake_sidecars" in a]
    assert len(hosts) == 1
    core.delete_namespaced_pod("live-b", ns)
    wait_until(lambda: read(core, ns, "live-b") is None, 15, "live-b gone")


def test_gated_containers_run_until_the_gate_opens_and_log_their_exit_time(apis, ns, tmp_path):
    core, _ = apis
    gate = tmp_path / "gate"
    names = [f"g{i}" for i in range(3)]
    for name in names:
        core.create_namespaced_pod(ns, pod(name, {"gate": str(gate)}))
    wait_until(lambda: len(list((gate / "started").glob("*"))) == 3, 30, "all gated started")
    phases = {read(core, ns, n).status.phase for n in names}
    assert phases <= {"Pending", "Running"}  # started, held at the gate
    (gate / "open").touch()
    wait_until(lambda: all(read(core, ns, n).status.phase == "Succeeded" for n in names), 30,
               "gated pods done once the gate opened")
    opened = (gate / "open").stat().st_mtime
    for name in names:
        text = core.read_namespaced_pod_log(name, ns)
        exited = float(text.rsplit(" at ", 1)[1])
        assert exited >= opened - 0.001, text
