"""The process runtime with real processes: mounts, read-only flags, identity, exit codes,
logs, stopping with a grace period and the memory limit."""
from __future__ import annotations

import asyncio
import errno
import os
import sys
import uuid
from pathlib import Path

import pytest

from localcluster.runtime.base import ContainerSpec, Mount, parse_log_line
from localcluster.runtime.process import ProcessRuntime

root_only = [pytest.mark.root,
             pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")]

WRITE_PROBE = """
import sys
try:
    open(sys.argv[1], "w").write("x")
    print("WROTE")
except OSError as e:
    print("ERRNO", e.errno)
"""


def _shared(path: Path) -> list[Mount]:
    """The test's directory at the same path in the container (its own writes stay private)."""
    return [Mount(str(path), str(path))] if os.geteuid() == 0 else []


def _spec(tmp_path: Path, argv: list[str], **kw) -> ContainerSpec:
    cid = uuid.uuid4().hex
    return ContainerSpec(id=cid, argv=argv, env=kw.pop("env", {"PATH": "/usr/bin:/bin"}),
                         log_path=tmp_path / "logs" / f"{cid}.log", **kw)


def _run(tmp_path: Path, spec: ContainerSpec):
    async def go():
        rt = ProcessRuntime(tmp_path / "state")
        try:
            c = await rt.start(spec)
            return await rt.wait(c)
        finally:
            await rt.close()
    status = asyncio.run(go())
    return status, _log_text(spec.log_path)


def _log_text(path: Path, stream: str | None = None) -> str:
    out = []
    for line in path.read_bytes().splitlines():
        rec = parse_log_line(line)
        if rec and (stream is None or rec[1] == stream):
            out.append(rec[3].decode())
    return "\n".join(out)


def test_exit_code_and_logs_of_both_streams(tmp_path):
    status, _ = _run(tmp_path, _spec(tmp_path, ["/bin/sh", "-c", "echo out; echo err >&2; exit 7"]))
    assert (status.exit_code, status.reason) == (7, "Error")
    spec_log = next((tmp_path / "logs").iterdir())
    assert _log_text(spec_log, "stdout") == "out"
    assert _log_text(spec_log, "stderr") == "err"


def test_success_is_completed(tmp_path):
    status, log = _run(tmp_path, _spec(tmp_path, ["/bin/sh", "-c", "echo $GREETING"],
                                       env={"GREETING": "hello", "PATH": "/bin"}))
    assert (status.exit_code, status.reason, log) == (0, "Completed", "hello")


def test_a_missing_executable_is_a_start_error(tmp_path):
    status, _ = _run(tmp_path, _spec(tmp_path, ["no-such-binary-xyz"]))
    assert (status.exit_code, status.reason) == (128, "StartError")
    assert 'exec: "no-such-binary-xyz": executable file not found in $PATH' in status.message


def test_long_lines_are_split_into_partial_records_and_joined_back(tmp_path):
    from localcluster.kubelet.logs import format_records
    spec = _spec(tmp_path, [sys.executable, "-c", "print('a' * 40000)"])
    status, _ = _run(tmp_path, spec)
    assert status.exit_code == 0
    raw = spec.log_path.read_bytes()
    assert b" stdout P " in raw
    assert format_records(raw) == "a" * 40000 + "\n"


def test_stop_sends_sigterm_and_waits_for_a_clean_exit(tmp_path):
    ready = tmp_path / "ready"
    spec = _spec(tmp_path, ["/bin/sh", "-c", f"trap 'echo term; exit 3' TERM; touch {ready}; "
                                             "while true; do sleep 0.05; done"],
                 mounts=_shared(tmp_path))

    async def go():
        rt = ProcessRuntime(tmp_path / "state")
        c = await rt.start(spec)
        await _until(ready.exists)
        return await rt.stop(c, 10)
    status = asyncio.run(go())
    assert status.exit_code == 3
    assert "term" in _log_text(spec.log_path)


def test_stop_kills_after_the_grace_period_when_sigterm_is_ignored(tmp_path):
    ready = tmp_path / "ready"
    spec = _spec(tmp_path, ["/bin/sh", "-c", f"trap '' TERM; touch {ready}; "
                                             "while true; do sleep 0.05; done"],
                 mounts=_shared(tmp_path))

    async def go():
        rt = ProcessRuntime(tmp_path / "state")
        c = await rt.start(spec)
        await _until(ready.exists)
        return await rt.stop(c, 0.3)
    status = asyncio.run(go())
    assert (status.exit_code, status.signal) == (137, 9)


def test_processes_left_by_the_main_process_are_killed_with_it(tmp_path):
    pidfile = tmp_path / "bg.pid"
    status, _ = _run(tmp_path, _spec(tmp_path, ["/bin/sh", "-c",
                                                f"sleep 60 & echo $! > {pidfile}; exit 0"],
                                     mounts=_shared(tmp_path)))
    assert status.exit_code == 0
    pid = int(pidfile.read_text())
    assert asyncio.run(_until(lambda: not _alive(pid)))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def _until(pred, timeout: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)
    return True




class TestMountNamespace:
    pytestmark = root_only

    def test_input_is_read_at_the_mount_path_and_a_readonly_mount_refuses_writes(self, tmp_path):
        src = tmp_path / "input"
        src.mkdir()
        (src / "data.csv").write_text("a,b\n1,2\n")
        target = f"/lc-test-{uuid.uuid4().hex[:8]}/input"
        spec = _spec(tmp_path, [sys.executable, "-c",
                                f"print(open('{target}/data.csv').read().splitlines()[1])\n"
                                + WRITE_PROBE, f"{target}/new"],
                     mounts=[Mount(str(src), target, readonly=True)], uid=1000, gid=1000)
        try:
            status, log = _run(tmp_path, spec)
        finally:
            top = "/" + target.split("/")[1]
            leftover = os.listdir(top) if os.path.isdir(top) else []
            if os.path.isdir(top):
                os.rmdir(top)
        assert status.exit_code == 0, log
        assert log.splitlines() == ["1,2", f"ERRNO {errno.EROFS}"]
        assert not (src / "new").exists()
        assert leftover == []  # the host only keeps an empty mount point directory

    def test_a_writable_mount_writes_through_to_the_host(self, tmp_path):
        out = tmp_path / "out"
        out.mkdir()
        os.chmod(out, 0o777)
        spec = _spec(tmp_path, [sys.executable, "-c", WRITE_PROBE, "/tmp/lc-out/result"],
                     mounts=[Mount(str(out), "/tmp/lc-out")], uid=1000, gid=1000)
        status, log = _run(tmp_path, spec)
        assert (status.exit_code, log) == (0, "WROTE")
        assert (out / "result").read_text() == "x"
        assert not os.path.exists("/tmp/lc-out/result")

    def test_writes_outside_volumes_stay_in_the_container(self, tmp_path):
        probe = tmp_path / "written-by-container"
        spec = _spec(tmp_path, ["/bin/sh", "-c", f"echo x > {probe} && cat {probe}"])
        status, log = _run(tmp_path, spec)
        assert (status.exit_code, log) == (0, "x")
        assert not probe.exists()

    def test_read_only_root_filesystem_refuses_writes_by_a_non_root_uid(self, tmp_path):
        spec = _spec(tmp_path, [sys.executable, "-c", WRITE_PROBE, "/tmp/lc-ro-probe"],
                     uid=1000, gid=1000, root_readonly=True)
        status, log = _run(tmp_path, spec)
        assert (status.exit_code, log) == (0, f"ERRNO {errno.EROFS}")

    def test_the_container_runs_as_the_given_uid_gid_and_groups(self, tmp_path):
        spec = _spec(tmp_path, [sys.executable, "-c",
                                "import os; print(os.getuid(), os.getgid(), sorted(os.getgroups()))"],
                     uid=1234, gid=2345, groups=[3456])
        status, log = _run(tmp_path, spec)
        assert (status.exit_code, log) == (0, "1234 2345 [3456]")

    def test_no_new_privs_is_set_and_a_non_root_container_has_no_capabilities(self, tmp_path):
        spec = _spec(tmp_path, ["/bin/sh", "-c", "grep -E '^(NoNewPrivs|CapEff|CapBnd)' "
                                                 "/proc/self/status"], uid=1000, gid=1000)
        status, log = _run(tmp_path, spec)
        fields = dict(line.split(":\t") for line in log.splitlines())
        assert fields["NoNewPrivs"] == "1"
        assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0

    def test_a_root_container_keeps_only_the_default_capabilities(self, tmp_path):
        spec = _spec(tmp_path, ["/bin/sh", "-c", "grep CapBnd /proc/self/status"])
        status, log = _run(tmp_path, spec)
        bounding = int(log.split(":\t")[1], 16)
        assert bounding & (1 << 21) == 0  # CAP_SYS_ADMIN
        assert bounding & (1 << 0)  # CAP_CHOWN, in Docker's default set

    def test_memory_limit_ends_in_oom_killed(self, tmp_path):
        if not Path("/sys/fs/cgroup/memory/cgroup.procs").exists():
            pytest.skip("no cgroup v1 memory controller")
        spec = _spec(tmp_path, [sys.executable, "-c", "x = bytearray(300 * 2**20); print('alive')"],
                     memory_limit=64 * 2**20)
        status, log = _run(tmp_path, spec)
        assert (status.exit_code, status.reason) == (137, "OOMKilled")
        assert "alive" not in log
