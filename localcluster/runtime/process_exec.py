"""`exec` for the process runtime: run a command inside a running container (exec probes).

As root the container's main process lives in its own mount namespace with a private root (see
`localcluster.runtime.shim`); the command enters it with ``nsenter`` (mount namespace, root, working
directory, and the pod's network namespace when it has one) and takes the container's identity
with ``setpriv`` (uid, gid, groups, capability bounding set, no_new_privs), in the container's
cgroups, with the container's environment. Without root a container is a plain process of ours,
and the command runs like one.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

from localcluster.runtime.base import ContainerSpec, ExecError

SHIM = Path(__file__).resolve().parent / "shim.py"


async def exec_in(container, argv: list[str], timeout: float, root: bool) -> int:
    """container: a started `ProcessContainer` (spec, proc, cgroups, done)."""
    if not argv:
        raise ExecError("no command given")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    spec: ContainerSpec = container.spec
    cwd = None
    if root:
        await _until_exec_ready(container, deadline)
        cmd = [*exec_prefix(container.proc.pid, spec), *argv]
    else:
        cmd, cwd = list(argv), spec.cwd
    if container.done.done():
        raise ExecError("the container is not running")
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True,
                                close_fds=True, env=dict(spec.env), cwd=cwd)
    except OSError as e:
        raise ExecError(f"cannot run {argv[0]!r}: {e.strerror}") from e
    # into the container's cgroups, so it is killed with the container (nsenter and setpriv
    # exec in place: the pid stays the command's)
    for cg in container.cgroups:
        with contextlib.suppress(OSError):
            (cg / "cgroup.procs").write_text(str(proc.pid))
    exited = loop.create_future()
    pidfd = os.pidfd_open(proc.pid)
    loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
    try:
        async with asyncio.timeout_at(deadline):  # (wait_for of 3.11 can swallow a cancel)
            await exited
    except TimeoutError:
        raise ExecError(f"command {' '.join(argv)!r} timed out") from None
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if proc.poll() is None:  # timed out or cancelled: it must not linger
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    rc = proc.returncode
    return 128 - rc if rc < 0 else rc


async def _until_exec_ready(c, deadline: float) -> None:
    """Until the shim has exec'd the container's command: before that the container's
    namespace and root are not set up yet (a probe right after the start would enter the
    host's)."""
    loop = asyncio.get_running_loop()
    shim = str(SHIM).encode()
    while True:
        if c.done.done():
            raise ExecError("the container is not running")
        try:
            cmdline = Path(f"/proc/{c.proc.pid}/cmdline").read_bytes()
        except OSError:
            cmdline = b""
        if cmdline and shim not in cmdline:
            return
        if loop.time() >= deadline:
            raise ExecError("timed out waiting for the container to start")
        await asyncio.sleep(0.01)


def exec_prefix(pid: int, spec: ContainerSpec) -> list[str]:
    """nsenter + setpriv argv entering container `pid` with the identity of `spec`, as the
    shim sets it up (same uid, gid, groups, bounding set, no_new_privs)."""
    from localcluster.runtime.shim import DEFAULT_ROOT_CAPS  # the shim loads libc: only when needed

    caps = spec.capabilities
    if caps is None:
        caps = list(DEFAULT_ROOT_CAPS) if spec.uid == 0 else []
    bounding = ",".join(["-all", *(f"+{c.lower()}" for c in caps)])
    groups = (["--groups=" + ",".join(str(g) for g in spec.groups)] if spec.groups
              else ["--clear-groups"])
    # absolute paths: the container's environment (perhaps without PATH) is passed through;
    # its root is an overlay of the host's, so setpriv is at the same place inside
    cmd = [shutil.which("nsenter") or "/usr/bin/nsenter", f"--target={pid}", "--mount",
           "--root", "--wd"]
    if spec.netns:
        cmd.append("--net")
    cmd += [shutil.which("setpriv") or "/usr/bin/setpriv", f"--reuid={spec.uid}",
            f"--regid={spec.gid}", *groups, f"--bounding-set={bounding}", "--pdeathsig=KILL"]
    if spec.no_new_privs:
        cmd.append("--no-new-privs")
    return [*cmd, "--"]
