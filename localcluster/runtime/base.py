"""The small container-runtime interface a kubelet uses (a CRI in miniature).

A runtime starts a prepared container (`ContainerSpec`), reports its exit (`ExitStatus`), stops it
with a grace period and writes its stdout/stderr to ``spec.log_path`` in the CRI log format
(``<RFC3339Nano> <stream> <F|P> <text>`` per line), which `parse_log_line` reads back.
"""
from __future__ import annotations

import abc
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localcluster.runtime.fake_spec import FakeInput


class RuntimeError_(Exception):
    """Base of runtime errors (named so it does not shadow the builtin)."""


class CreateContainerError(RuntimeError_):
    """The container cannot be created (the kubelet reports waiting reason CreateContainerError)."""


class ExecNotSupported(RuntimeError_, NotImplementedError):
    """The runtime cannot run a command inside a container (exec probes then fail)."""


class ExecError(RuntimeError_):
    """A command cannot be run inside the container (not running, timed out, cannot start)."""


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    readonly: bool = False


@dataclass
class ContainerSpec:
    """A container ready to start: everything resolved (image, env, volumes, identity)."""

    id: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: str | None = None
    mounts: list[Mount] = field(default_factory=list)
    uid: int = 0
    gid: int = 0
    groups: list[int] = field(default_factory=list)
    root_readonly: bool = False
    no_new_privs: bool = True
    capabilities: list[str] | None = None  # kept in the bounding set; None = runtime default
    memory_limit: int | None = None  # bytes
    cpu_limit_millis: int | None = None
    netns: str | None = None  # path of the network namespace to join; None = the host's
    # set in a pod the fake runtime completes (`runtime.fake`): its name, pod annotations, the
    # image's fake defaults; None: a real container
    fake: FakeInput | None = None


@dataclass(frozen=True)
class ExitStatus:
    exit_code: int
    reason: str  # Completed | Error | OOMKilled | StartError
    started_at: dt.datetime
    finished_at: dt.datetime
    message: str | None = None
    signal: int | None = None

    @property
    def oom_killed(self) -> bool:
        return self.reason == "OOMKilled"


class Container(abc.ABC):
    """A started container."""

    id: str
    started_at: dt.datetime


class Runtime(abc.ABC):
    @abc.abstractmethod
    async def start(self, spec: ContainerSpec) -> Container:
        """Start the container; raises CreateContainerError when it cannot be created."""

    @abc.abstractmethod
    async def wait(self, container: Container) -> ExitStatus:
        """Wait for the container's exit (may be called many times, concurrently)."""

    @abc.abstractmethod
    async def stop(self, container: Container, grace_seconds: float) -> ExitStatus:
        """SIGTERM, then SIGKILL after grace_seconds; returns the exit status."""

    async def exec(self, container: Container, argv: list[str], timeout: float) -> int:
        """Run argv inside the running container (its root, mounts, user and network) and return
        its exit code. Raises ExecError when it cannot run or outlives `timeout` seconds (it is
        killed then). Optional: runtimes that cannot do it raise ExecNotSupported."""
        raise ExecNotSupported(f"exec probes are not supported by this runtime "
                               f"({type(self).__name__})")

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop every container still running (SIGTERM, then SIGKILL) and release resources."""


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def format_log_line(at: dt.datetime, stream: str, text: bytes, partial: bool) -> bytes:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    return b"%s %s %s %s\n" % (stamp.encode(), stream.encode(), b"P" if partial else b"F", text)


def parse_log_line(line: bytes) -> tuple[str, str, bool, bytes] | None:
    """(timestamp, stream, partial, text) of one CRI log line, None when malformed."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    text = parts[3] if len(parts) == 4 else b""
    return parts[0].decode(), parts[1].decode(), parts[2] == b"P", text
