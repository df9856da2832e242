"""Container probes (startup, readiness, liveness) on an in-process store with the real kubelet
and process runtime.

Probes run from the kubelet's side against the pod IP; the containers here serve HTTP/TCP on
their pod IP (127.0.1.x in the host pod network, a namespace of their own in the isolated one).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import uuid

import pytest

from localcluster.controllers import run_controllers
from localcluster.kubelet.kubelet import KubeletConfig
from localcluster.kubelet.probes import (Action, Probe, ProbeError, Threshold, parse_probe,
                                         resolve_port, run_action)
from localcluster.apiserver.resources import PODS
from localcluster.runtime.base import ExecNotSupported, Runtime
from localcluster.apiserver.store import Store

from .kubelet_fixtures import (TEST_IMAGES, InProcess, needs_root, run_in_process,
                               share_host_dir)
from .probe_fixtures import (LOOP, condition, cstatus, fast, free_port, messages, pod_of,
                             server, status)


# --- pure parts -----------------------------------------------------------------------------------

def test_probe_numbers_default_as_in_kubernetes_and_ports_resolve_by_number_or_name():
    c = {"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}
    p = parse_probe("Readiness", {"httpGet": {"port": "http", "path": "healthz"}}, c, "10.0.0.5")
    assert (p.initial_delay, p.period, p.timeout, p.success_threshold, p.failure_threshold,
            p.termination_grace) == (0, 10, 1, 1, 3, None)
    assert p.action == Action("httpGet", host="10.0.0.5", port=8080, path="/healthz")
    assert resolve_port(9090, c) == 9090 and resolve_port("9090", c) == 9090
    tcp = parse_probe("Liveness", {"tcpSocket": {"port": 7, "host": "127.0.0.9"},
                                   "periodSeconds": 2, "failureThreshold": 1}, c, "10.0.0.5")
    assert tcp.action == Action("tcpSocket", host="127.0.0.9", port=7) and tcp.period == 2


@pytest.mark.parametrize("raw, says", [
    ({"httpGet": {"port": "nope"}}, "port 'nope' not found in the ports of container 'web'"),
    ({"tcpSocket": {"port": 70000}}, "invalid port number"),
    ({}, "no handler"),
    ({"exec": {"command": ["true"]}, "tcpSocket": {"port": 1}}, "more than one handler"),
    ({"exec": {"command": []}}, "exec.command must be a non-empty list"),
    ({"exec": {"command": ["true"]}, "periodSeconds": 0}, "periodSeconds must be an integer of "
                                                          "at least 1"),
    ({"httpGet": {"port": 80, "scheme": "FTP"}}, "expected HTTP or HTTPS"),
    ({"httpGet": {"port": 80, "path": "/a b"}}, "must be percent-encoded"),
    ({"httpGet": {"port": 80, "httpHeaders": [{"name": "X", "value": "a\r\nEvil: 1"}]}},
     "bad header"),
])
def test_bad_probe_specs_are_refused_clearly(raw, says):
    with pytest.raises(ProbeError, match=says.replace("(", r"\(")):
        parse_probe("Readiness", raw, {"name": "web"}, "10.0.0.5")


def test_a_result_changes_only_after_its_threshold_of_equal_results_in_a_row():
    t = Threshold(Probe("Liveness", Action("tcpSocket"), success_threshold=2,
                        failure_threshold=3))
    assert [t.observe(ok) for ok in (False, False, True, False, False, False, True, True)] == \
        [None, None, None, None, None, False, None, True]


def test_exec_on_a_runtime_without_exec_is_a_failure_that_says_so():
    class NoExec(Runtime):
        async def start(self, spec): ...
        async def wait(self, container): ...
        async def stop(self, container, grace_seconds): ...
        async def close(self): ...

    with pytest.raises(ExecNotSupported):
        asyncio.run(NoExec().exec(object(), ["true"], 1))
    ok, message = asyncio.run(run_action(Action("exec", command=("true",)), 1, NoExec(), None))
    assert not ok and message == "exec probes are not supported by this runtime (NoExec)"


def _self_signed(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=probe-test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


@pytest.mark.parametrize("scheme", ["HTTP", "HTTPS"])
def test_http_get_succeeds_from_200_to_399_and_says_why_it_failed(tmp_path, scheme):
    """Against a server in this process (127.0.0.1, an ephemeral port): status codes, headers,
    no redirect following, timeouts; HTTPS without certificate checks, as the kubelet."""
    ctx = _self_signed(tmp_path) if scheme == "HTTPS" else None
    seen: list[bytes] = []

    async def handle(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        path = head.split(b" ")[1].decode()
        if path == "/hang":
            await asyncio.sleep(30)  # (cancelled when the server closes)
        code = {"/ok": 204, "/moved": 302, "/gone": 404}[path]
        writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % code)
        await writer.drain()
        writer.close()

    async def go():
        srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
        port = srv.sockets[0].getsockname()[1]
        try:
            def get(path, **kw):
                a = Action("httpGet", host="127.0.0.1", port=port, scheme=scheme, path=path, **kw)
                return run_action(a, 1, None, None)
            assert await get("/ok", headers=(("X-Probe", "yes"),)) == (True, "")
            assert b"\r\nX-Probe: yes\r\n" in seen[-1] and b"User-Agent: kube-probe/" in seen[-1]
            assert await get("/moved") == (True, "")
            assert await get("/gone") == (False, "HTTP probe failed with statuscode: 404")
            ok, why = await get("/hang")
            url = f"{scheme.lower()}://127.0.0.1:{port}/hang"
            assert not ok and why == (f'Get "{url}": context deadline exceeded '
                                      f"(Client.Timeout exceeded while awaiting headers)")
        finally:
            srv.close()
            await srv.wait_closed()
    asyncio.run(go())


# --- readiness ------------------------------------------------------------------------------------

def test_http_readiness_sets_ready_and_the_pod_ready_condition(tmp_path):
    ok = tmp_path / "ok"

    async def body(h):
        port = free_port()
        probe = fast({"httpGet": {"port": "http", "path": "/healthz",
                                  "httpHeaders": [{"name": "X-Probe", "value": "yes"}]}},
                     failureThreshold=1)
        c = server("web", port, "--ok-if", str(ok), "--want-header", "X-Probe=yes",
                   readinessProbe=probe)
        h.store.create(PODS, "default", share_host_dir(pod_of("web", [c]), tmp_path))
        await h.until(lambda: "Readiness probe failed: HTTP probe failed with statuscode: 503"
                      in messages(h, "web", "Unhealthy", "web"), what="a failed probe")
        cs = cstatus(h, "web", "web")
        assert "running" in cs["state"] and cs["started"] is True and cs["ready"] is False
        assert condition(h, "web", "Ready")["status"] == "False"
        assert condition(h, "web", "ContainersReady")["message"] == \
            "containers with unready status: [web]"
        ok.touch()
        await h.until(lambda: condition(h, "web", "Ready").get("status") == "True",
                      what="pod Ready")
        assert cstatus(h, "web", "web")["ready"] is True
        assert condition(h, "web", "ContainersReady")["status"] == "True"
        ok.unlink()  # not ready again after one failure (failureThreshold 1)
        await h.until(lambda: cstatus(h, "web", "web").get("ready") is False,
                      what="not ready again")
        assert condition(h, "web", "Ready")["status"] == "False"
        assert cstatus(h, "web", "web")["restartCount"] == 0  # readiness never restarts
    run_in_process(tmp_path, body)


def test_tcp_readiness_follows_the_listening_socket(tmp_path):
    go = tmp_path / "go"

    async def body(h):
        port = free_port()
        c = server("tcp", port, "--listen-after", str(go),
                   readinessProbe=fast({"tcpSocket": {"port": port}}))
        h.store.create(PODS, "default", share_host_dir(pod_of("tcp", [c]), tmp_path))
        await h.until(lambda: any(m.startswith("Readiness probe failed: dial tcp ") and
                                  m.endswith("connect: connection refused")
                                  for m in messages(h, "tcp", "Unhealthy", "tcp")),
                      what="a refused connection")
        assert cstatus(h, "tcp", "tcp")["ready"] is False
        go.touch()
        await h.until(lambda: condition(h, "tcp", "Ready").get("status") == "True",
                      what="pod Ready")
        assert cstatus(h, "tcp", "tcp")["ready"] is True
    run_in_process(tmp_path, body)


@needs_root
def test_exec_readiness_runs_inside_the_container_with_its_identity_and_env(tmp_path):
    go = tmp_path / "go"
    private = f"/probe-{uuid.uuid4().hex[:8]}"  # an emptyDir: exists only inside the container
    check = (f"test -e {private}/inside && test \"$(id -g)\" = 4321 && test \"$GREETING\" = hi "
             f"&& grep -q 'CapBnd:\\s0000000000000000' /proc/self/status && test -e {go}")

    async def body(h):
        c = {"name": "ex", "image": "test/sh", "args": [f"touch {private}/inside; {LOOP}"],
             "env": [{"name": "GREETING", "value": "hi"}],
             "securityContext": {"runAsGroup": 4321, "capabilities": {"drop": ["ALL"]}},
             "volumeMounts": [{"name": "scratch", "mountPath": private}],
             "readinessProbe": fast({"exec": {"command": ["sh", "-c", check]}})}
        pod = pod_of("ex", [c], volumes=[{"name": "scratch", "emptyDir": {}}])
        h.store.create(PODS, "default", share_host_dir(pod, tmp_path))
        await h.until(lambda: any(m.startswith("Readiness probe failed: command ") and
                                  m.endswith("exited with 1")
                                  for m in messages(h, "ex", "Unhealthy", "ex")),
                      what="a failing exec probe")
        assert cstatus(h, "ex", "ex")["ready"] is False
        go.touch()
        await h.until(lambda: condition(h, "ex", "Ready").get("status") == "True",
                      what="pod Ready")
    run_in_process(tmp_path, body)
    assert not os.path.exists(private)  # (the probe saw what only the container has)


def test_unsupported_and_misconfigured_probes_say_so_and_never_pass(tmp_path):
    async def body(h):
        c = {"name": "main", "image": "test/sh", "args": [LOOP],
             "readinessProbe": fast({"grpc": {"port": 9}})}
        side = {"name": "side", "image": "test/sh", "args": [LOOP],
                "readinessProbe": {"httpGet": {"port": "missing"}}}
        h.store.create(PODS, "default", pod_of("odd", [c, side]))
        await h.until(lambda: messages(h, "odd", "Unhealthy", "main")
                      and messages(h, "odd", "Unhealthy", "side"), what="both reported")
        assert messages(h, "odd", "Unhealthy", "main")[0] == \
            "Readiness probe failed: grpc probes are not supported by the local cluster"
        assert messages(h, "odd", "Unhealthy", "side") == [
            "Readiness probe errored: port 'missing' not found in the ports of container "
            "'side'"]
        assert status(h, "odd")["phase"] == "Running"
        assert not cstatus(h, "odd", "main")["ready"] and not cstatus(h, "odd", "side")["ready"]
        assert condition(h, "odd", "Ready")["message"] == \
            "containers with unready status: [main side]"
    run_in_process(tmp_path, body)


def test_an_exec_probe_that_outlives_its_timeout_fails_and_is_killed(tmp_path):
    async def body(h):
        c = {"name": "main", "image": "test/sh", "args": [LOOP],
             "readinessProbe": fast({"exec": {"command": ["sleep", "30"]}})}
        h.store.create(PODS, "default", pod_of("hang", [c]))
        await h.until(lambda: messages(h, "hang", "Unhealthy", "main"), what="a failed probe")
        assert messages(h, "hang", "Unhealthy", "main") == [
            "Readiness probe failed: command 'sleep 30' timed out"]
        assert cstatus(h, "hang", "main")["ready"] is False
        # (the conftest fixture fails the test if the timed-out command were left running)
    run_in_process(tmp_path, body)


# --- startup and liveness -----------------------------------------------------------------------

def test_a_failing_startup_probe_keeps_the_container_unstarted_and_restarts_it(tmp_path):
    async def body(h):
        c = {"name": "main", "image": "test/sh", "args": ["while true; do sleep 0.05; done"],
             "startupProbe": fast({"tcpSocket": {"port": free_port()}}, failureThreshold=2),
             "readinessProbe": fast({"exec": {"command": ["true"]}})}
        h.store.create(PODS, "default", pod_of("slow", [c], restart="Always"))
        await h.until(lambda: cstatus(h, "slow", "main").get("restartCount", 0) >= 1,
                      what="a restart", timeout=20)
        assert messages(h, "slow", "Killing", "main")[0] == \
            "Container main failed startup probe, will be restarted"
        failed = messages(h, "slow", "Unhealthy", "main")
        assert failed and all(m.startswith("Startup probe failed: dial tcp ") for m in failed)
        assert cstatus(h, "slow", "main")["started"] is False
        assert cstatus(h, "slow", "main")["ready"] is False
        last = cstatus(h, "slow", "main")["lastState"]["terminated"]
        assert last["exitCode"] != 0
        # the readiness probe never ran: it would have passed (and reported nothing)
        assert not any(m.startswith("Readiness") for m in failed)
    run_in_process(tmp_path, body)


@pytest.mark.parametrize("restart, expect", [
    ("Always", "Container main failed liveness probe, will be restarted"),
    ("Never", "Container main failed liveness probe")])
def test_a_failing_liveness_probe_kills_the_container(tmp_path, restart, expect):
    alive = tmp_path / "alive"
    alive.touch()

    async def body(h):
        port = free_port()
        c = server("main", port, "--ok-if", str(alive),
                   livenessProbe=fast({"httpGet": {"port": port}}, failureThreshold=2))
        h.store.create(PODS, "default", share_host_dir(pod_of("live", [c], restart=restart),
                                                       tmp_path))
        await h.until(lambda: cstatus(h, "live", "main").get("ready"), what="running")
        alive.unlink()
        await h.until(lambda: messages(h, "live", "Killing", "main"), what="killed")
        assert messages(h, "live", "Killing", "main") == [expect]
        assert len(messages(h, "live", "Unhealthy", "main")) >= 2
        if restart == "Always":
            await h.until(lambda: cstatus(h, "live", "main").get("restartCount", 0) >= 1
                          and "running" in cstatus(h, "live", "main")["state"],
                          what="restarted", timeout=20)
            assert cstatus(h, "live", "main")["lastState"]["terminated"]["exitCode"] != 0
        else:
            await h.until(lambda: status(h, "live").get("phase") == "Failed", what="failed")
            assert cstatus(h, "live", "main")["restartCount"] == 0
    run_in_process(tmp_path, body)


# --- the isolated pod network -------------------------------------------------------------------

@pytest.mark.root
def test_probes_reach_pods_in_the_isolated_network(tmp_path):
    from localcluster.network.netns import IsolatedNetwork, NetworkSettings
    from localcluster.testing import require_isolation
    require_isolation()

    async def go():
        store = Store()
        net = IsolatedNetwork.open(NetworkSettings(mode="isolated"))
        config = KubeletConfig(network=net)
        task = asyncio.ensure_future(run_controllers(store, tmp_path, [TEST_IMAGES], config))
        h = InProcess(store, tmp_path)
        try:
            port = free_port()
            c = server("web", port, readinessProbe=fast({"httpGet": {"port": "http"}}),
                       livenessProbe=fast({"tcpSocket": {"port": port}}))
            h.store.create(PODS, "default", pod_of("iso", [c]))
            await h.until(lambda: condition(h, "iso", "Ready").get("status") == "True",
                          what="pod Ready")
            assert status(h, "iso")["podIP"].startswith("10.")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            store.close()
            net.close()
    asyncio.run(go())
