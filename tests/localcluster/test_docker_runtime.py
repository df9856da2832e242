"""The docker runtime under the kubelet: images from the local engine, logs, exit codes,
securityContext, limits, pods sharing localhost. Skipped (reason printed) without Docker/root."""
from __future__ import annotations

import pytest

from localcluster.kubelet.kubelet import read_log
from localcluster.apiserver.resources import PODS
from localcluster.runtime.docker import DockerContainerSpec, container_config, exit_status
from localcluster.runtime.base import Mount

from .docker_fixtures import docker_images, pod, run_docker  # noqa: F401 (fixture)


def _phase(h, name):
    return ((h.pod(name) or {}).get("status") or {}).get("phase")


def _term(h, name):
    return h.container_state(name).get("terminated") or {}


def _waiting_reason(h, name):
    return (h.container_state(name).get("waiting") or {}).get("reason")


# --- pure parts (no engine) -----------------------------------------------------------------

def _spec(tmp_path, **kw):
    base = dict(id="x" * 64, argv=["/bin/prog", "a", "b"], env={"A": "1"},
                log_path=tmp_path / "log", image="sha256:abc", pod_uid="u", pod_name="p",
                namespace="ns", container_name="c", netns="container:sb")
    return DockerContainerSpec(**{**base, **kw})


def test_the_container_config_carries_identity_limits_and_mounts(tmp_path):
    cfg = container_config(_spec(tmp_path, uid=1000, gid=2000, groups=[3000],
                                 root_readonly=True, capabilities=["NET_BIND_SERVICE"],
                                 memory_limit=64 << 20, cpu_limit_millis=500,
                                 mounts=[Mount("/src", "/dst", readonly=True)]), "c1", "1:2")
    host = cfg["HostConfig"]
    assert (cfg["Entrypoint"], cfg["Cmd"], cfg["User"]) == (["/bin/prog"], ["a", "b"],
                                                             "1000:2000")
    assert host["NetworkMode"] == "container:sb" and host["GroupAdd"] == ["3000"]
    assert host["ReadonlyRootfs"] is True and host["SecurityOpt"] == ["no-new-privileges"]
    assert (host["CapDrop"], host["CapAdd"]) == (["ALL"], ["CAP_NET_BIND_SERVICE"])
    assert (host["Memory"], host["MemorySwap"], host["NanoCpus"]) == (64 << 20, 64 << 20,
                                                                      500_000_000)
    assert host["Mounts"] == [{"Type": "bind", "Source": "/src", "Target": "/dst",
                               "ReadOnly": True}]
    assert cfg["Labels"]["localcluster.pod-uid"] == "u"
    # runtime defaults: no capability lists, host network without a sandbox
    plain = container_config(_spec(tmp_path, netns=None), "c1", "1:2")["HostConfig"]
    assert "CapDrop" not in plain and plain["NetworkMode"] == "host"


def test_exit_status_maps_oom_and_signals():
    oom = exit_status({"ExitCode": 137, "OOMKilled": True,
                       "StartedAt": "2026-01-01T00:00:00.123456789Z",
                       "FinishedAt": "2026-01-01T00:00:01Z"}, None)
    assert (oom.exit_code, oom.reason) == (137, "OOMKilled")
    assert oom.started_at.microsecond == 123456
    term = exit_status({"ExitCode": 143, "StartedAt": "2026-01-01T00:00:00Z",
                        "FinishedAt": "2026-01-01T00:00:01Z"}, None)
    assert (term.exit_code, term.reason, term.signal) == (143, "Error", 15)


def test_engine_log_frames_become_cri_records(tmp_path):
    import io
    import struct

    from localcluster.runtime.docker_client import FrameDecoder
    from localcluster.runtime.base import parse_log_line
    from localcluster.runtime.docker import _write_record

    def frame(kind, text):
        return struct.pack(">BxxxL", kind, len(text)) + text
    data = (frame(1, b"2026-01-01T00:00:00.5Z hello\n")
            + frame(2, b"2026-01-01T00:00:01Z oops\n") + frame(1, b"2026-01-01T00:00:02Z part"))
    decoder = FrameDecoder()
    frames = decoder.feed(data[:10]) + decoder.feed(data[10:])  # split inside a header
    out = io.BytesIO()
    for stream, payload in frames:
        _write_record(out, stream, payload)
    records = [parse_log_line(line) for line in out.getvalue().splitlines(keepends=True)]
    assert [(r[1], r[2], r[3]) for r in records] == [
        ("stdout", False, b"hello"), ("stderr", False, b"oops"), ("stdout", True, b"part")]
    assert records[0][0] == "2026-01-01T00:00:00.500000000Z"


# --- with the engine ------------------------------------------------------------------------

def test_a_pod_runs_from_a_local_image_with_logs_and_exit_code(tmp_path, docker_images):
    async def body(h, net):
        h.store.create(PODS, "default", pod("ok", docker_images["python"], args=[
            "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"]))
        await h.until(lambda: _phase(h, "ok") == "Failed", what="Failed", timeout=60)
        p = h.pod("ok")
        term = _term(h, "ok")
        assert (term["exitCode"], term["reason"]) == (3, "Error")
        assert term["startedAt"] <= term["finishedAt"]
        assert p["status"]["containerStatuses"][0]["imageID"].startswith("sha256:")
        assert sorted(read_log(h.state_dir, p).splitlines()) == ["err", "out"]
        ip = p["status"]["podIP"]
        assert ip and not ip.startswith("127.")
    run_docker(tmp_path, body)


def test_image_cmd_and_user_apply_without_command_or_args(tmp_path, docker_images):
    async def body(h, net):
        h.store.create(PODS, "default", pod("cmd", docker_images["user"]))
        await h.until(lambda: _phase(h, "cmd") == "Succeeded", what="Succeeded", timeout=60)
        assert read_log(h.state_dir, h.pod("cmd")) == "cmd ran as 1000\n"
    run_docker(tmp_path, body)


def test_a_missing_command_is_a_start_error(tmp_path, docker_images):
    async def body(h, net):
        h.store.create(PODS, "default", pod("nocmd", docker_images["python"],
                                            command=["/no/such/program"]))
        await h.until(lambda: _phase(h, "nocmd") == "Failed", what="Failed", timeout=60)
        term = _term(h, "nocmd")
        assert (term["exitCode"], term["reason"]) == (128, "StartError")
        assert "/no/such/program" in term["message"]
    run_docker(tmp_path, body)


def test_an_image_not_built_locally_is_err_image_pull(tmp_path, docker_images):
    async def body(h, net):
        h.store.create(PODS, "default", pod("pull", "lc-test/never-built:1"))
        await h.until(lambda: _waiting_reason(h, "pull") == "ErrImagePull", what="ErrImagePull")
        assert "never pulls" in h.container_state("pull")["waiting"]["message"]
        await h.until(lambda: _waiting_reason(h, "pull") == "ImagePullBackOff",
                      what="ImagePullBackOff")
        assert _phase(h, "pull") == "Pending"
    run_docker(tmp_path, body)


def test_read_only_mounts_root_and_run_as_user_are_enforced(tmp_path, docker_images):
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("input")
    script = (
        "import os\n"
        "print('uid', os.getuid(), os.getgid(), sorted(os.getgroups()))\n"
        "print('read', open('/data/in.txt').read())\n"
        "for path in ('/data/new', '/etc/new', '/tmp/new'):\n"
        "    try:\n"
        "        open(path, 'w').close(); print('wrote', path)\n"
        "    except OSError as e:\n"
        "        print('refused', path, e.errno)\n"
        "status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())\n"
        "print('caps', status['CapBnd'].strip(), 'nnp', status['NoNewPrivs'].strip(),\n"
        "      'seccomp', status['Seccomp'].strip())\n")

    async def body(h, net):
        p = pod("sec", docker_images["python"], args=["-c", script],
                securityContext={"runAsUser": 1234, "runAsGroup": 2345,
                                 "readOnlyRootFilesystem": True,
                                 "capabilities": {"drop": ["ALL"]}},
                volumeMounts=[{"name": "data", "mountPath": "/data", "readOnly": True},
                              {"name": "tmp", "mountPath": "/tmp"}])
        p["spec"]["securityContext"] = {"supplementalGroups": [3456]}
        p["spec"]["volumes"] = [{"name": "data", "hostPath": {"path": str(data)}},
                                {"name": "tmp", "emptyDir": {}}]
        h.store.create(PODS, "default", p)
        await h.until(lambda: _phase(h, "sec") in ("Succeeded", "Failed"), what="done",
                      timeout=60)
        out = read_log(h.state_dir, h.pod("sec")).splitlines()
        assert out[0] == "uid 1234 2345 [2345, 3456]"
        assert out[1] == "read input"
        assert "refused /data/new 30" in out  # EROFS: the read-only volume
        assert "refused /etc/new 30" in out  # the read-only root filesystem
        assert "wrote /tmp/new" in out  # a writable volume still is
        # capabilities dropped, no_new_privs, the engine's default seccomp filter (mode 2)
        assert out[-1] == "caps 0000000000000000 nnp 1 seccomp 2"
    run_docker(tmp_path, body)


def test_a_container_over_its_memory_limit_is_oom_killed(tmp_path, docker_images):
    async def body(h, net):
        h.store.create(PODS, "default", pod(
            "oom", docker_images["python"],
            args=["-c", "x = []\nwhile True: x.append(bytearray(8 << 20))"],
            resources={"limits": {"memory": "48Mi", "cpu": "500m"}}))
        await h.until(lambda: _phase(h, "oom") == "Failed", what="Failed", timeout=60)
        term = _term(h, "oom")
        assert (term["exitCode"], term["reason"]) == (137, "OOMKilled")
    run_docker(tmp_path, body)


def test_containers_of_a_pod_share_localhost(tmp_path, docker_images):
    server = ("import socket\ns = socket.socket(); s.bind(('127.0.0.1', 7777)); s.listen()\n"
              "c, _ = s.accept(); c.sendall(b'hello from the sidecar'); c.close()")
    client = ("import socket, time\n"
              "for _ in range(200):\n"
              "    try:\n"
              "        c = socket.create_connection(('127.0.0.1', 7777), timeout=1); break\n"
              "    except OSError: time.sleep(0.05)\n"
              "print(c.recv(100).decode())")

    async def body(h, net):
        p = pod("two", docker_images["python"], args=["-c", client])
        p["spec"]["containers"].append({"name": "server", "image": docker_images["python"],
                                        "args": ["-c", server]})
        h.store.create(PODS, "default", p)
        await h.until(lambda: _phase(h, "two") in ("Succeeded", "Failed"), what="done",
                      timeout=60)
        assert _phase(h, "two") == "Succeeded"
        assert read_log(h.state_dir, h.pod("two"), "main") == "hello from the sidecar\n"
    run_docker(tmp_path, body)


def test_deleting_a_running_pod_stops_its_containers_and_removes_them(tmp_path, docker_images):
    from localcluster.runtime.docker_client import SyncDocker

    async def body(h, net):
        h.store.create(PODS, "default", pod("long", docker_images["python"], args=[
            "-c", "import time; print('up', flush=True); time.sleep(600)"]))
        await h.until(lambda: "running" in h.container_state("long"), what="running",
                      timeout=60)
        h.store.delete(PODS, "default", "long")
        await h.until(lambda: h.pod("long") is None, what="removed", timeout=30)
        left = SyncDocker().request("GET", "/containers/json", {"all": True, "filters": {
            "label": [f"localcluster.cluster={net.cluster}", "localcluster.role=container"]}})
        assert left == []
    run_docker(tmp_path, body)


def test_close_removes_every_container_and_network_of_the_cluster(tmp_path, docker_images):
    from localcluster.runtime.docker_client import SyncDocker
    clusters = []

    async def body(h, net):
        clusters.append(net.cluster)
        h.store.create(PODS, "default", pod("stay", docker_images["python"], args=[
            "-c", "import time; time.sleep(600)"]))
        await h.until(lambda: "running" in h.container_state("stay"), what="running",
                      timeout=60)
    run_docker(tmp_path, body)
    client = SyncDocker()
    label = {"label": [f"localcluster.cluster={clusters[0]}"]}
    assert client.request("GET", "/containers/json", {"all": True, "filters": label}) == []
    assert client.request("GET", "/networks", {"filters": label}) == []


def test_serve_picks_the_runtime_from_the_environment_and_cleanup_removes_a_killed_cluster(
        tmp_path, docker_images, monkeypatch):
    import os
    import signal
    import subprocess
    import sys

    import kubernetes

    from localcluster.runtime.docker_client import SyncDocker
    from localcluster.testing import LocalCluster, wait_until

    monkeypatch.setenv("LOCALCLUSTER_RUNTIME", "docker")
    lc = LocalCluster(state_dir=tmp_path / "state")
    with lc:
        assert lc.network()["mode"] == "docker"
        cluster = lc.network()["cluster"]
        core = kubernetes.client.CoreV1Api(lc.api_client())
        # isolated: the pod gets an internal network, with its iptables chain
        kubernetes.client.NetworkingV1Api(lc.api_client()).create_namespaced_network_policy(
            "default", {"metadata": {"name": "deny"},
                        "spec": {"podSelector": {}, "policyTypes": ["Egress"]}})
        core.create_namespaced_pod("default", pod("srv", docker_images["python"], args=[
            "-c", "import time; print('serving', flush=True); time.sleep(600)"]))
        wait_until(lambda: core.read_namespaced_pod("srv", "default").status.phase == "Running",
                   timeout=60, what="Running")
        wait_until(lambda: core.read_namespaced_pod_log("srv", "default") == "serving\n",
                   timeout=30, what="the pod's log through the API")
        label = {"label": [f"localcluster.cluster={cluster}"]}
        client = SyncDocker()
        assert len(client.request("GET", "/containers/json", {"filters": label})) == 2
        rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
        assert f"LC-lc{cluster}i" in rules and f"-i lc{cluster}i+" in rules
        os.killpg(lc._proc.pid, signal.SIGKILL)  # no cleanup by the cluster itself
        lc._proc.wait()
        assert len(client.request("GET", "/containers/json", {"filters": label})) == 2
        done = subprocess.run([sys.executable, "-m", "localcluster", "cleanup-network"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert client.request("GET", "/containers/json", {"all": True, "filters": label}) == []
        assert client.request("GET", "/networks", {"filters": label}) == []
        assert cluster not in subprocess.run(["iptables", "-S"], capture_output=True,
                                             text=True).stdout


def test_exec_runs_inside_the_container_with_its_exit_code_and_timeout(tmp_path, docker_images):
    import asyncio
    import secrets

    from localcluster.runtime.docker_images import DockerImages
    from localcluster.network.docker_net import DockerNetwork
    from localcluster.runtime.base import ContainerSpec, ExecError
    from localcluster.runtime.docker import DockerRuntime, with_image

    network = DockerNetwork(secrets.token_hex(3))
    p = {"metadata": {"name": "ex", "namespace": "default", "uid": secrets.token_hex(8)},
         "spec": {"containers": [{"name": "main", "image": docker_images["python"]}]}}

    async def go():
        runtime = DockerRuntime(network.cluster)
        try:
            podnet = await network.setup(p["metadata"]["uid"], False, p)
            image = DockerImages().resolve(docker_images["python"])
            spec = with_image(ContainerSpec(
                id=secrets.token_hex(32), argv=["/usr/bin/python3.11", "-c",
                                                "open('/tmp/ready', 'w').close(); "
                                                "import time; time.sleep(600)"],
                env={"PATH": "/usr/bin"}, log_path=tmp_path / "ex.log", uid=1000, gid=1000,
                netns=podnet.netns), p, p["spec"]["containers"][0], image.image_id)
            c = await runtime.start(spec)
            probe = ["/usr/bin/python3.11", "-c",
                     "import os, sys; sys.exit(0 if os.path.exists('/tmp/ready') and "
                     "os.getuid() == 1000 else 5)"]
            for _ in range(100):
                if await runtime.exec(c, probe, 10) == 0:
                    break
            assert await runtime.exec(c, probe, 10) == 0
            assert await runtime.exec(c, ["/usr/bin/python3.11", "-c", "exit(7)"], 10) == 7
            with pytest.raises(ExecError, match="timed out"):
                await runtime.exec(c, ["/usr/bin/sleep", "30"], 0.3)
            with pytest.raises(ExecError, match="cannot run"):
                await runtime.exec(c, ["/no/such/binary"], 10)
            await runtime.stop(c, 0)
            with pytest.raises(ExecError, match="not running"):
                await runtime.exec(c, probe, 10)
        finally:
            await runtime.close()
            await network.drain()
    try:
        asyncio.run(go())
    finally:
        network.close()
