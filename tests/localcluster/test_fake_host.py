"""The fake runtime on its own (no kubelet): timers, stop and exec of fake containers, and the
shared sidecar host: bind, stop with drain, kill past the grace period, bad settings, a host
that dies."""
from __future__ import annotations

import asyncio
import os
import secrets
import signal
from pathlib import Path

import pytest
import zmq

from localcluster.runtime.base import ContainerSpec, ExecError, Mount, parse_log_line
from localcluster.runtime import fake
from localcluster.runtime.fake import FakeRuntime
from localcluster.runtime.fake_spec import PREFIX, FakeInput
from node import live_frames as F

SIDECAR_ARGV = ["/py", "-m", "node", "sidecar"]
_ip_counter = iter(range(2, 250))


def spec(tmp_path: Path, argv=(), env=None, notes=None, mounts=()) -> ContainerSpec:
    cid = secrets.token_hex(32)
    return ContainerSpec(id=cid, argv=list(argv), env=dict(env or {}),
                         log_path=tmp_path / f"{cid[:8]}.log", mounts=list(mounts),
                         fake=FakeInput("main", notes or {}))


def sidecar_env(run_id: int, **extra) -> dict:
    return {"RUN_ID": str(run_id), "POD_IP": f"127.81.7.{next(_ip_counter)}",
            "LIVE_HEARTBEAT_SECONDS": "0.1", **extra}


def log_texts(s: ContainerSpec) -> list[str]:
    return [parse_log_line(line)[3].decode() for line in s.log_path.read_bytes().splitlines()]


def run(body):
    async def go():
        rt = FakeRuntime()
        try:
            await body(rt)
        finally:
            await rt.close()
    asyncio.run(go())


def test_a_timer_container_exits_stop_is_sigterm_and_exec_needs_it_running(tmp_path):
    async def body(rt):
        quick = await rt.start(spec(tmp_path, notes={PREFIX + "delay": "50ms",
                                                     PREFIX + "exit-code": "7"}))
        assert await rt.exec(quick, ["anything"], 1.0) == 0
        st = await asyncio.wait_for(rt.wait(quick), 5)
        assert (st.exit_code, st.reason, st.signal) == (7, "Error", None)
        with pytest.raises(ExecError, match="not running"):
            await rt.exec(quick, ["anything"], 1.0)
        s = spec(tmp_path, notes={PREFIX + "delay": "1h"})
        slow = await rt.start(s)
        st = await asyncio.wait_for(rt.stop(slow, 30), 1)
        assert (st.exit_code, st.reason, st.signal) == (143, "Error", 15)
        assert await rt.wait(slow) == st
        assert log_texts(s)[0] == "fake container main started: runs 3600s, then exits 0"
        assert log_texts(s)[1].startswith("fake container main stopped (SIGTERM) after ")
    run(body)


def test_a_hosted_sidecar_answers_and_stops_with_its_stopped_heartbeat(tmp_path):
    async def body(rt):
        s = spec(tmp_path, SIDECAR_ARGV, sidecar_env(5))
        c = await rt.start(s)
        ip = s.env["POD_IP"]
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.linger = 0
        sub.setsockopt_string(zmq.SUBSCRIBE, "")
        sub.connect(f"tcp://{ip}:5555")
        try:
            loop = asyncio.get_running_loop()
            frames = await loop.run_in_executor(None, lambda: sub.poll(5000) and
                                                sub.recv_multipart())
            assert frames and F.decode(frames)[1] == F.HEARTBEAT
            st = await rt.stop(c, 10)  # nothing undelivered: no drain
            assert (st.exit_code, st.reason) == (0, "Completed")

            def stopped():
                while sub.poll(3000):
                    _, kind, b = F.decode(sub.recv_multipart())
                    if kind == F.HEARTBEAT and b["state"] == "stopped":
                        return True
                return False
            assert await loop.run_in_executor(None, stopped)
        finally:
            sub.close()
        assert log_texts(s) == [f"live-channel sidecar hosted by the fake runtime on {ip} "
                                f"(pub 5555, rep 5556)", "live-channel sidecar stopped, exit 0"]
    run(body)


def test_a_draining_sidecar_is_killed_after_the_grace_period(tmp_path):
    async def body(rt):
        live = tmp_path / "live"
        live.mkdir()
        (live / "progress").write_text('{"progress": 0.5, "message": "half"}\n')
        s = spec(tmp_path, SIDECAR_ARGV,
                 sidecar_env(6, LIVE_DRAIN_SECONDS="60", PROGRESS_FILE="/app/live/progress"),
                 mounts=[Mount(str(live), "/app/live", True)])
        c = await rt.start(s)
        # the node never fetched the progress line: the sidecar would drain for 60s
        st = await asyncio.wait_for(rt.stop(c, 0.3), 10)
        assert (st.exit_code, st.reason, st.signal) == (137, "Error", 9)
    run(body)


def test_bad_sidecar_settings_exit_2_as_the_real_sidecar(tmp_path):
    async def body(rt):
        s = spec(tmp_path, SIDECAR_ARGV, {"POD_IP": "127.81.9.1"})
        st = await asyncio.wait_for(rt.wait(await rt.start(s)), 5)
        assert (st.exit_code, st.reason) == (2, "Error")
        assert "cannot start: RUN_ID must be a run id" in log_texts(s)[0]
    run(body)


def test_a_dead_host_ends_its_sidecars_and_is_started_again(tmp_path):
    async def body(rt):
        c = await rt.start(spec(tmp_path, SIDECAR_ARGV, sidecar_env(8)))
        os.kill(rt.hosts[0].proc.pid, signal.SIGKILL)
        st = await asyncio.wait_for(rt.wait(c), 10)
        assert (st.exit_code, st.reason) == (1, "Error")
        assert st.message == "the fake runtime's sidecar host exited"
        again = await rt.start(spec(tmp_path, SIDECAR_ARGV, sidecar_env(9)))
        assert not again.done.done()
        assert (await rt.stop(again, 5)).exit_code == 0
    run(body)


def test_sidecars_past_one_hosts_room_go_to_another_host(tmp_path, monkeypatch):
    monkeypatch.setattr(fake, "SIDECARS_PER_HOST", 1)

    async def body(rt):
        a = await rt.start(spec(tmp_path, SIDECAR_ARGV, sidecar_env(11)))
        b = await rt.start(spec(tmp_path, SIDECAR_ARGV, sidecar_env(12)))
        assert len(rt.hosts) == 2 and a.host is not b.host
        assert a.host.proc.pid != b.host.proc.pid
        assert (await rt.stop(a, 5)).exit_code == 0
        c = await rt.start(spec(tmp_path, SIDECAR_ARGV, sidecar_env(13)))
        assert c.host is a.host  # room again once a sidecar ended
        for x in (b, c):
            assert (await rt.stop(x, 5)).exit_code == 0
    run(body)
