"""Process runtime: every container is a local process in its own private mount namespace.

As root each container runs as ``unshare --mount --propagation private <python> -I shim.py SPEC``;
the shim (``localcluster/runtime/shim.py``) gives it a private root (an overlay of the host's ``/``
with a tmpfs upper layer: writes outside volumes stay in the container), bind-mounts the volumes
at their mount paths, honours ``readOnly`` and ``readOnlyRootFilesystem``, switches to the
container's uid/gid, sets no_new_privs, drops capabilities and execs the command. The container
process gets SIGKILL if the cluster process dies (PR_SET_PDEATHSIG), and processes it leaves
behind are killed when its main process ends (process group and cgroup). Memory and CPU limits use a child cgroup
per container under the cgroup v1 ``memory`` and ``cpu`` controllers (``.../localcluster/<id>``);
when those are not writable the limits are not enforced (a warning is logged). An OOM kill is
reported as reason ``OOMKilled``, exit code 137.

Without root (``os.geteuid() != 0``) there are no mount namespaces and no uid switch: a container
without volumes runs as a plain process of the current user (``runAsUser`` and read-only flags are
not enforced, a warning is logged); a container with volumes fails with ``CreateContainerError``
"volumes need root for mount namespaces".

Network: with ``spec.netns`` set (the kubelet's isolated pod network, `localcluster.network.netns`) the
shim joins that network namespace first, so all containers of a pod share it; otherwise a
container shares the host's network and its pod IP (127.0.1.x) is an address it may bind to.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from localcluster.runtime.base import (Container, ContainerSpec, CreateContainerError, ExitStatus,
                                       Runtime, format_log_line, now)
from localcluster.runtime.process_exec import exec_in

log = logging.getLogger(__name__)

SHIM = Path(__file__).resolve().parent / "shim.py"
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
SHIM_SETUP_FAILED = 128
_LINE_LIMIT = 16 * 1024  # longer lines are split into partial (P) log records, as CRI does


@dataclass
class ProcessContainer(Container):
    id: str
    spec: ContainerSpec
    proc: subprocess.Popen
    started_at: object
    dir: Path
    cgroups: list[Path]
    pumps: list[asyncio.Task] = field(default_factory=list)
    transports: list = field(default_factory=list)
    exited: asyncio.Future | None = None
    pidfd: int = -1
    pumps_ready: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Future | None = None
    stopping: bool = False


class ProcessRuntime(Runtime):
    def __init__(self, state_dir: Path, python: str | None = None,
                 cgroup_root: Path = Path("/sys/fs/cgroup")) -> None:
        self.state_dir = Path(state_dir) / "containers"
        self.python = python or sys.executable
        self.cgroup_root = cgroup_root
        self.root = os.geteuid() == 0
        self._containers: dict[str, ProcessContainer] = {}
        self._warned: set[str] = set()

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    # --- cgroups ---

    def _make_cgroups(self, spec: ContainerSpec) -> list[Path]:
        made: list[Path] = []
        # a memory cgroup always: it also finds every process of the container when stopping
        wanted = [("memory", True), ("cpu", spec.cpu_limit_millis is not None)]
        for controller, want in wanted:
            if not want:
                continue
            base = self.cgroup_root / controller
            if not self.root or not (base / "cgroup.procs").exists():
                if controller == "memory" and spec.memory_limit is not None:
                    self._warn_once("memory", "no writable memory cgroup at %s: memory limits "
                                    "are not enforced", base)
                continue
            path = base / "localcluster" / spec.id
            try:
                path.mkdir(parents=True, exist_ok=True)
                if controller == "memory" and spec.memory_limit is not None:
                    (path / "memory.limit_in_bytes").write_text(str(spec.memory_limit))
                    swap = path / "memory.memsw.limit_in_bytes"
                    if swap.exists():  # no swapping around the limit
                        with contextlib.suppress(OSError):
                            swap.write_text(str(spec.memory_limit))
                if controller == "cpu":
                    (path / "cpu.cfs_period_us").write_text("100000")
                    (path / "cpu.cfs_quota_us").write_text(str(spec.cpu_limit_millis * 100))
                made.append(path)
            except OSError as e:
                self._warn_once(controller, "cannot use the %s cgroup at %s (%s): its limits "
                                "are not enforced", controller, base, e)
                _remove_cgroup(path)
        return made

    # --- lifecycle ---

    async def start(self, spec: ContainerSpec) -> ProcessContainer:
        cdir = self.state_dir / spec.id
        cdir.mkdir(parents=True, exist_ok=True)
        error_file = cdir / "error"
        error_file.unlink(missing_ok=True)
        root_dir = cdir / "root"  # the shim's private root is mounted here, in its namespace
        root_dir.mkdir(exist_ok=True)
        if not self.root:
            if spec.mounts:
                raise CreateContainerError("volumes need root for mount namespaces (the local "
                                           "cluster runs without root)")
            self._warn_once("nonroot", "running without root: containers run as uid %d, "
                            "without mount namespaces", os.geteuid())
        cgroups = self._make_cgroups(spec)
        shim_spec = {
            "argv": spec.argv, "env": spec.env, "cwd": spec.cwd,
            "mounts": [{"source": m.source, "target": m.target, "readonly": m.readonly}
                       for m in spec.mounts],
            "root_readonly": spec.root_readonly, "uid": spec.uid, "gid": spec.gid,
            "groups": spec.groups, "no_new_privs": spec.no_new_privs,
            "capabilities": spec.capabilities, "cgroups": [str(c) for c in cgroups],
            "reachable": [sys.base_prefix, sys.prefix, str(REPO_ROOT),
                          str(Path(self.python).parent)],
            "namespace": self.root, "error_file": str(error_file), "parent_pid": os.getpid(),
            "root_dir": str(root_dir), "netns": spec.netns,
        }
        spec_path = cdir / "spec.json"
        fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(shim_spec, f)
        argv = [self.python, "-I", str(SHIM), str(spec_path)]
        if self.root:
            argv = ["unshare", "--mount", "--propagation", "private", *argv]
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        r_out, w_out = os.pipe()
        r_err, w_err = os.pipe()
        try:
            # plain Popen + pidfd: asyncio's subprocess wait() would also wait for the pipes,
            # which a leftover background process can hold open
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=w_out, stderr=w_err,
                start_new_session=True, close_fds=True,
                env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")})
        except OSError as e:
            for fd in (r_out, r_err):
                os.close(fd)
            for cg in cgroups:
                _remove_cgroup(cg)
            raise CreateContainerError(f"cannot start the container process: {e}") from e
        finally:
            os.close(w_out)
            os.close(w_err)
        c = ProcessContainer(id=spec.id, spec=spec, proc=proc, started_at=now(), dir=cdir,
                             cgroups=cgroups)
        c.exited = loop.create_future()
        c.pidfd = os.pidfd_open(proc.pid)
        loop.add_reader(c.pidfd, lambda: c.exited.done() or c.exited.set_result(None))
        logf = open(spec.log_path, "ab")
        c.done = asyncio.ensure_future(self._supervise(c, logf))
        self._containers[c.id] = c
        pipes = [(r_out, "stdout"), (r_err, "stderr")]
        try:
            while pipes:
                fd, name = pipes[0]
                reader = asyncio.StreamReader(limit=2 ** 20)
                transport, _ = await loop.connect_read_pipe(
                    lambda r=reader: asyncio.StreamReaderProtocol(r),
                    os.fdopen(fd, "rb", buffering=0))
                pipes.pop(0)
                c.transports.append(transport)
                c.pumps.append(asyncio.ensure_future(_pump(reader, name, logf)))
        except BaseException:
            # cancelled while starting: the process must not outlive this
            for fd, _ in pipes:
                os.close(fd)
            self._signal_all(c, signal.SIGKILL)
            raise
        c.pumps_ready.set()
        return c

    async def _supervise(self, c: ProcessContainer, logf) -> ExitStatus:
        try:
            await c.exited
            loop = asyncio.get_running_loop()
            loop.remove_reader(c.pidfd)
            os.close(c.pidfd)
            rc = c.proc.wait()
            finished = now()
            # the container ends with its main process, as in a real runtime: kill what is left
            self._signal_all(c, signal.SIGKILL)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(c.pumps_ready.wait(), 1.0)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*c.pumps, return_exceptions=True), 2.0)
            for t in c.pumps:
                t.cancel()
            for tr in c.transports:
                tr.close()
            return self._exit_status(c, rc, finished)
        finally:
            logf.close()
            for cg in c.cgroups:
                await _remove_cgroup_async(cg)
            self._containers.pop(c.id, None)
            shutil.rmtree(c.dir, ignore_errors=True)

    def _exit_status(self, c: ProcessContainer, rc: int, finished) -> ExitStatus:
        error_file = c.dir / "error"
        msg = error_file.read_text() if error_file.exists() else ""
        if rc == SHIM_SETUP_FAILED and msg:
            return ExitStatus(exit_code=128, reason="StartError", started_at=c.started_at,
                              finished_at=finished, message=msg)
        sig = -rc if rc < 0 else None
        code = 128 + sig if sig else rc
        if any(_oom_killed(cg) for cg in c.cgroups if cg.parent.parent.name == "memory"):
            return ExitStatus(exit_code=137, reason="OOMKilled", started_at=c.started_at,
                              finished_at=finished, signal=sig)
        return ExitStatus(exit_code=code, reason="Completed" if code == 0 else "Error",
                          started_at=c.started_at, finished_at=finished, signal=sig)

    def _signal_all(self, c: ProcessContainer, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(c.proc.pid, sig)
        # processes that left the process group are still in the container's cgroup
        for cg in c.cgroups:
            for pid in _cgroup_pids(cg):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)

    async def wait(self, container: Container) -> ExitStatus:
        assert isinstance(container, ProcessContainer) and container.done is not None
        return await asyncio.shield(container.done)

    async def stop(self, container: Container, grace_seconds: float) -> ExitStatus:
        assert isinstance(container, ProcessContainer) and container.done is not None
        container.stopping = True
        if not container.done.done():
            self._signal_all(container, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(container.done), max(grace_seconds, 0))
            except asyncio.TimeoutError:
                self._signal_all(container, signal.SIGKILL)
        return await asyncio.shield(container.done)

    async def exec(self, container: Container, argv: list[str], timeout: float) -> int:
        """See `localcluster.runtime.process_exec`."""
        assert isinstance(container, ProcessContainer) and container.done is not None
        return await exec_in(container, argv, timeout, self.root)

    async def close(self) -> None:
        running = list(self._containers.values())
        if running:
            await asyncio.gather(*(self.stop(c, 2.0) for c in running), return_exceptions=True)


async def _pump(stream: asyncio.StreamReader, name: str, logf) -> None:
    buf = b""
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            break
        buf += chunk
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                break
            line, buf = buf[:nl], buf[nl + 1:]
            _write_line(logf, name, line)
        while len(buf) > _LINE_LIMIT:
            logf.write(format_log_line(now(), name, buf[:_LINE_LIMIT], partial=True))
            buf = buf[_LINE_LIMIT:]
        logf.flush()
    if buf:
        _write_line(logf, name, buf)
        logf.flush()


def _write_line(logf, name: str, line: bytes) -> None:
    while len(line) > _LINE_LIMIT:
        logf.write(format_log_line(now(), name, line[:_LINE_LIMIT], partial=True))
        line = line[_LINE_LIMIT:]
    logf.write(format_log_line(now(), name, line, partial=False))


def _cgroup_pids(cg: Path) -> list[int]:
    try:
        return [int(p) for p in (cg / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _oom_killed(cg: Path) -> bool:
    try:
        for line in (cg / "memory.oom_control").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and int(value) > 0:
                return True
    except (OSError, ValueError):
        return False
    return False


def _remove_cgroup(cg: Path) -> None:
    with contextlib.suppress(OSError):
        cg.rmdir()


async def _remove_cgroup_async(cg: Path) -> None:
    # a cgroup can be removed only once its last process is gone (reaping may lag a moment)
    for _ in range(50):
        try:
            cg.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            for pid in _cgroup_pids(cg):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.02)
    log.warning("cannot remove cgroup %s", cg)
