"""Fake runtime: containers that complete without a process, as kwok's do, so that thousands of
pods cost the local cluster little (``serve --runtime fake``; or per image, below).

A fake container "runs" for the delay its pod's annotations give and exits with their exit code
(`localcluster.runtime.fake_spec`: ``pod-complete.stage.localcluster.dev/delay``, ``exit-code``,
``oom-killed``, ``progress-steps``; the image's ``fake:`` registry entry gives defaults). Its
end is a timer on the event loop's one heap (``loop.call_later``): no thread, process or task
per container. A value that does not parse fails the creation (``CreateContainerError``, which
the kubelet retries with back-off, as it does a real one). Its log (``spec.log_path``, CRI
format) says what it did: ``fake container main ran 2s, exit 0``. ``stop`` ends it at once, as
SIGTERM ends a process that does not handle it: exit 143, signal 15. Exec probes succeed while
it runs (exit 0) and fail once it ended; http and tcp probes meet nothing listening.

The node's live-channel sidecar (``python -m node sidecar``) is not faked: one shared sidecar
host process (`localcluster.runtime.fake_sidecars`, started on first use, stopped by `close`)
runs a real `node.sidecar.Sidecar` for it, bound on the fake pod's IP, so the node sees real
heartbeats, pongs and the "stopped" heartbeat, and the sidecar's tcp startup probe passes once
it is bound. ``stop`` is its SIGTERM (it drains, then exits 0); past the grace period, SIGKILL
(exit 137).

`ProcessOrFakeRuntime` is the default runtime when the image registry marks images ``fake``:
the kubelet runs a pod fake when every container's image is fake (live sidecars aside) and
marks its containers' specs (``ContainerSpec.fake``); those go to the fake runtime, all others
to the process runtime. Fake pods get a loopback IP of their own and no network namespace
(`localcluster.network.loopback`).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from localcluster.runtime.base import (Container, ContainerSpec, CreateContainerError,
                                       ExecError, ExitStatus, Runtime, format_log_line, now)
from localcluster.runtime.fake_host import HostError, SidecarHost
from localcluster.runtime.fake_spec import (FakeInput, FakePlan, FakeSpecError, describe,
                                            is_live_sidecar, plan)

log = logging.getLogger(__name__)

# what node.sidecar.SidecarSettings reads of its environment
SIDECAR_ENV = ("RUN_ID", "POD_IP", "LIVE_PUB_PORT", "LIVE_REP_PORT", "LIVE_HEARTBEAT_SECONDS",
               "LIVE_DRAIN_SECONDS", "PROGRESS_FILE")
SIGTERM_EXIT, SIGKILL_EXIT = 143, 137
KILL_WAIT = 5.0  # how long a killed hosted sidecar may take to be reported gone
# sidecars per host process: each costs the host ~4 fds (two zmq sockets, their eventfds), and
# the host's RLIMIT_NOFILE (raised to the hard limit, often 20,000+) caps one process
SIDECARS_PER_HOST = 1500
GATE_POLL = 0.01  # how often gated containers look for their gate's "open" file


@dataclass(eq=False)
class FakeContainer(Container):
    id: str
    spec: ContainerSpec
    started_at: dt.datetime
    done: asyncio.Future
    plan: FakePlan | None = None  # None: a hosted live sidecar
    host: SidecarHost | None = None  # the process hosting it
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    began: float = field(default_factory=time.monotonic)

    @property
    def hosted(self) -> bool:
        return self.plan is None


def host_path(spec: ContainerSpec, path: str | None) -> Path | None:
    """Where a path inside the container is on the host: under the volume mounted there, if
    any (a fake container has no root filesystem of its own)."""
    if not path:
        return None
    best = None
    for m in spec.mounts:
        target = m.target.rstrip("/") or "/"
        if path == target or path.startswith(target.rstrip("/") + "/"):
            if best is None or len(target) > len(best.target.rstrip("/")):
                best = m
    if best is None:
        return None
    rest = path[len(best.target.rstrip("/")):].lstrip("/")
    return Path(best.source) / rest if rest else Path(best.source)


def _log(spec: ContainerSpec, text: str, stream: str = "stdout") -> None:
    try:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "ab") as f:
            f.write(format_log_line(now(), stream, text.encode(), partial=False))
    except OSError as e:
        log.warning("cannot write the log of fake container %s: %s", spec.id[:12], e)


class FakeRuntime(Runtime):
    fake_pods = "all"  # the kubelet runs every pod fake (Kubelet.fake_pod)

    def __init__(self, python: str | None = None) -> None:
        self.python = python
        self.hosts: list[SidecarHost] = []  # started as needed, SIDECARS_PER_HOST each
        self._containers: dict[str, FakeContainer] = {}
        # gate folder -> containers waiting on it; one task looks for every gate's "open"
        self._gated: dict[str, set[FakeContainer]] = {}
        self._gate_task: asyncio.Task | None = None

    async def start(self, spec: ContainerSpec) -> FakeContainer:
        inp = spec.fake or FakeInput(name="")
        loop = asyncio.get_running_loop()
        if is_live_sidecar(spec.argv):
            return await self._start_sidecar(spec, loop)
        try:
            p = plan(inp)
        except FakeSpecError as e:
            raise CreateContainerError(f"fake runtime: {e}") from None
        c = FakeContainer(id=spec.id, spec=spec, started_at=now(), done=loop.create_future(),
                          plan=p)
        self._track(c)
        _log(spec, f"fake container {inp.name} started: runs {describe(p.delay)}"
                   + ("" if p.delay is None else f", then exits {p.exit_code}"
                      + (" (OOMKilled)" if p.oom_killed else "")))
        if p.gate is not None and p.delay is not None:
            self._wait_gate(c, p.gate)
        elif p.delay is not None:
            self._begin(c, loop)
        return c

    def _begin(self, c: FakeContainer, loop) -> None:
        """The container's delay starts now: its end and its progress lines are timers."""
        p, spec = c.plan, c.spec
        c.timers.append(loop.call_later(p.delay, self._finish, c))
        progress = host_path(spec, spec.env.get("PROGRESS_FILE"))
        if p.progress_steps and progress is not None:
            for i in range(1, p.progress_steps):  # the last one is written at the exit
                c.timers.append(loop.call_later(p.delay * i / p.progress_steps,
                                                _progress, progress, i, p.progress_steps))

    def _wait_gate(self, c: FakeContainer, gate: str) -> None:
        try:
            started = Path(gate) / "started"
            started.mkdir(parents=True, exist_ok=True)
            (started / c.id).touch()
        except OSError as e:
            log.warning("fake container %s: cannot mark its start at gate %s: %s",
                        c.id[:12], gate, e)
        self._gated.setdefault(gate, set()).add(c)
        if self._gate_task is None or self._gate_task.done():
            self._gate_task = asyncio.get_running_loop().create_task(self._watch_gates())

    async def _watch_gates(self) -> None:
        loop = asyncio.get_running_loop()
        while self._gated:
            for gate, waiting in list(self._gated.items()):
                waiting = {c for c in waiting if not c.done.done()}  # stopped meanwhile
                if waiting and (Path(gate) / "open").exists():
                    for c in waiting:
                        self._begin(c, loop)
                    waiting = set()
                if waiting:
                    self._gated[gate] = waiting
                else:
                    del self._gated[gate]
            await asyncio.sleep(GATE_POLL)

    def _track(self, c: FakeContainer) -> None:
        self._containers[c.id] = c
        c.done.add_done_callback(lambda _: self._containers.pop(c.id, None))

    def _finish(self, c: FakeContainer) -> None:
        if c.done.done() or c.plan is None:
            return
        p = c.plan
        progress = host_path(c.spec, c.spec.env.get("PROGRESS_FILE"))
        if p.progress_steps and progress is not None:
            _progress(progress, p.progress_steps, p.progress_steps)
        # the exit time to the microsecond: benchmarks measure completion from it (the pod
        # status' finishedAt has whole seconds)
        _log(c.spec, f"fake container {c.spec.fake.name if c.spec.fake else ''} ran "
                     f"{describe(p.delay)}, exit {p.exit_code}"
                     + (" (OOMKilled)" if p.oom_killed else "") + f" at {time.time():.6f}")
        c.done.set_result(ExitStatus(exit_code=p.exit_code, reason=p.reason,
                                     started_at=c.started_at, finished_at=now(),
                                     signal=9 if p.oom_killed else None))

    async def _start_sidecar(self, spec: ContainerSpec, loop) -> FakeContainer:
        c = FakeContainer(id=spec.id, spec=spec, started_at=now(), done=loop.create_future())
        self._track(c)
        env = {k: spec.env[k] for k in SIDECAR_ENV if k in spec.env}
        # the sidecar reads the progress file where the pod's volume is on the host
        progress = host_path(spec, env.get("PROGRESS_FILE"))
        env["PROGRESS_FILE"] = str(progress or spec.log_path.parent / f".{spec.id[:16]}-none")
        try:
            c.host = self._host()
            pub, rep = await c.host.start(c.id, env, lambda code: self._hosted_exit(c, code))
        except HostError as e:
            # as `python -m node sidecar` with bad settings: it logs why and exits 2
            _log(spec, f"live-channel sidecar {e}", "stderr")
            if not c.done.done():
                c.done.set_result(ExitStatus(exit_code=2, reason="Error",
                                             started_at=c.started_at, finished_at=now()))
            return c
        except BaseException:
            c.done.cancel()
            raise
        _log(spec, f"live-channel sidecar hosted by the fake runtime on {env.get('POD_IP')} "
                   f"(pub {pub}, rep {rep})")
        return c

    def _hosted_exit(self, c: FakeContainer, code: int | None) -> None:
        if c.done.done():
            return
        message = None
        if code is None:
            message = "the fake runtime's sidecar host exited"
            code = 1
        _log(c.spec, f"live-channel sidecar stopped, exit {code}" + (f": {message}"
                                                                       if message else ""))
        c.done.set_result(ExitStatus(
            exit_code=code, reason="Completed" if code == 0 else "Error", message=message,
            started_at=c.started_at, finished_at=now(),
            signal=9 if code == SIGKILL_EXIT else None))

    async def wait(self, container: Container) -> ExitStatus:
        assert isinstance(container, FakeContainer)
        return await asyncio.shield(container.done)

    async def stop(self, container: Container, grace_seconds: float) -> ExitStatus:
        assert isinstance(container, FakeContainer)
        c = container
        if c.done.done():
            return c.done.result()
        if c.hosted:
            c.host.stop(c.id)
            try:
                return await asyncio.wait_for(asyncio.shield(c.done), max(grace_seconds, 0))
            except asyncio.TimeoutError:
                c.host.kill(c.id)
            try:
                return await asyncio.wait_for(asyncio.shield(c.done), KILL_WAIT)
            except asyncio.TimeoutError:  # the host does not answer: count it gone
                self._hosted_exit(c, SIGKILL_EXIT)
                return c.done.result()
        for t in c.timers:
            t.cancel()
        _log(c.spec, f"fake container {c.spec.fake.name if c.spec.fake else ''} stopped "
                     f"(SIGTERM) after {time.monotonic() - c.began:.3g}s, exit {SIGTERM_EXIT}")
        c.done.set_result(ExitStatus(exit_code=SIGTERM_EXIT, reason="Error",
                                     started_at=c.started_at, finished_at=now(), signal=15))
        return c.done.result()

    async def exec(self, container: Container, argv: list[str], timeout: float) -> int:
        """Nothing runs inside a fake container: a command succeeds while it runs."""
        assert isinstance(container, FakeContainer)
        if container.done.done():
            raise ExecError("container is not running")
        return 0

    async def close(self) -> None:
        if self._gate_task is not None:
            self._gate_task.cancel()
        running = list(self._containers.values())
        if running:
            await asyncio.gather(*(self.stop(c, 2.0) for c in running), return_exceptions=True)
        await asyncio.gather(*(h.close() for h in self.hosts), return_exceptions=True)

    def _host(self) -> SidecarHost:
        """A host process with room for one more sidecar (a new one when all are full)."""
        for h in self.hosts:
            if len(h.exits) + len(h.ready) < SIDECARS_PER_HOST:
                return h
        self.hosts.append(SidecarHost(self.python))
        return self.hosts[-1]


def _progress(path: Path, step: int, steps: int) -> None:
    line = json.dumps({"time": time.time(), "progress": step / steps,
                       "message": f"step {step} of {steps}"})
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError as e:  # progress is a courtesy, as in algorithms.common.progress
        log.debug("cannot write fake progress to %s: %s", path, e)


class ProcessOrFakeRuntime(Runtime):
    """Fake containers (``spec.fake`` set by the kubelet for fake pods) to the fake runtime,
    every other one to the process runtime."""

    fake_pods = "images"  # the kubelet runs a pod fake when its images are (Kubelet.fake_pod)
    version_string = "process://localcluster"  # what the Node reports, as without fakes

    def __init__(self, process: Runtime, fake: FakeRuntime) -> None:
        self.process, self.fake = process, fake

    def _of(self, container: Container) -> Runtime:
        return self.fake if isinstance(container, FakeContainer) else self.process

    async def start(self, spec: ContainerSpec) -> Container:
        return await (self.fake if spec.fake is not None else self.process).start(spec)

    async def wait(self, container: Container) -> ExitStatus:
        return await self._of(container).wait(container)

    async def stop(self, container: Container, grace_seconds: float) -> ExitStatus:
        return await self._of(container).stop(container, grace_seconds)

    async def exec(self, container: Container, argv: list[str], timeout: float) -> int:
        return await self._of(container).exec(container, argv, timeout)

    async def close(self) -> None:
        await asyncio.gather(self.process.close(), self.fake.close())
