"""Docker runtime: every container of a pod is a Docker container (images built locally).

A container joins its pod's sandbox (``spec.netns == "container:<sandbox id>"``, made by
`localcluster.network.docker_net`), so the containers of a pod share one network namespace (and localhost);
without a sandbox (``netns`` None: ``hostNetwork`` pods) it uses the host's network. The kubelet's
`ContainerSpec` maps onto the engine's container config:
- ``argv`` → Entrypoint ``argv[0]`` + Cmd ``argv[1:]`` (the kubelet already applied
  ``command``/``args`` over the image's ENTRYPOINT/CMD, taken from ``docker image inspect``);
- volumes → bind mounts, ``readOnly`` honoured; ``readOnlyRootFilesystem`` → ReadonlyRootfs;
- uid/gid/groups → User ``uid:gid`` + GroupAdd; capabilities: the runtime default, or drop ALL and
  add those kept; no-new-privileges; the engine's default seccomp profile (never unconfined);
- memory (swap = memory, no swapping around it) and CPU (NanoCpus) limits; an OOM kill is
  reason ``OOMKilled`` with exit code 137 (``State.OOMKilled``).
Logs are followed from the engine (json-file driver, so nothing is lost between start and
follow) and written to ``spec.log_path`` in the CRI format; exit code and start/finish times come
from ``inspect``. A container that cannot start (e.g. its command is missing) exits with reason
``StartError`` (128), as with the process runtime. Finished containers are removed from the engine
(their logs stay in the kubelet's files).

Every container is labelled with the cluster id, owner (pid and start time), pod uid and name,
so `cleanup_leftovers` removes what a killed cluster left behind; `close` removes all.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import os
from dataclasses import dataclass, fields

from localcluster.runtime.docker_client import LABEL, AsyncDocker, DockerError, FrameDecoder, SyncDocker
from localcluster.runtime.base import (Container, ContainerSpec, CreateContainerError, ExecError,
                                       ExitStatus, Runtime, format_log_line, now)

log = logging.getLogger(__name__)

_LINE_LIMIT = 16 * 1024
OWNER_LABEL = "localcluster.owner"  # "<pid>:<start time>" of the cluster process
POD_LABEL = "localcluster.pod-uid"


@dataclass
class DockerContainerSpec(ContainerSpec):
    """A `ContainerSpec` with what a runtime of images needs besides (see `with_image`)."""

    image: str = ""  # image id (sha256:...) or reference
    pod_uid: str = ""
    pod_name: str = ""
    namespace: str = ""
    container_name: str = ""


def with_image(spec: ContainerSpec, pod: dict, container: dict, image_id: str | None
               ) -> DockerContainerSpec:
    """The kubelet's spec plus the image and pod it belongs to."""
    meta = pod["metadata"]
    base = {f.name: getattr(spec, f.name) for f in fields(ContainerSpec)}
    return DockerContainerSpec(**base, image=image_id or container.get("image", ""),
                               pod_uid=meta["uid"], pod_name=meta["name"],
                               namespace=meta["namespace"], container_name=container["name"])


def owner_id() -> str:
    try:
        with open(f"/proc/{os.getpid()}/stat") as f:
            start = f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        start = "0"
    return f"{os.getpid()}:{start}"


def owner_alive(owner: str) -> bool:
    pid, _, start = owner.partition(":")
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19] == start
    except (OSError, IndexError, ValueError):
        return False


def container_config(spec: DockerContainerSpec, cluster: str, owner: str) -> dict:
    """The engine's create body for a spec (pure)."""
    if spec.netns is None:
        network_mode = "host"
    elif spec.netns.startswith("container:"):
        network_mode = spec.netns
    else:
        raise CreateContainerError(f"the docker runtime cannot join network namespace "
                                   f"{spec.netns} (it needs the docker pod network)")
    host: dict = {
        "NetworkMode": network_mode,
        "Mounts": [{"Type": "bind", "Source": m.source, "Target": m.target,
                    "ReadOnly": m.readonly} for m in spec.mounts],
        "ReadonlyRootfs": spec.root_readonly,
        "GroupAdd": [str(g) for g in spec.groups],
        "SecurityOpt": ["no-new-privileges"] if spec.no_new_privs else [],
        "LogConfig": {"Type": "json-file", "Config": {}},
        "Init": False,
    }
    if spec.capabilities is not None:
        host["CapDrop"] = ["ALL"]
        host["CapAdd"] = [f"CAP_{c}" for c in spec.capabilities]
    if spec.memory_limit is not None:
        host["Memory"] = spec.memory_limit
        host["MemorySwap"] = spec.memory_limit
    if spec.cpu_limit_millis is not None:
        host["NanoCpus"] = spec.cpu_limit_millis * 1_000_000
    labels = {LABEL: cluster, OWNER_LABEL: owner, POD_LABEL: spec.pod_uid,
              "localcluster.pod": f"{spec.namespace}/{spec.pod_name}",
              "localcluster.container": spec.container_name, "localcluster.role": "container"}
    return {
        "Image": spec.image, "Entrypoint": spec.argv[:1], "Cmd": spec.argv[1:],
        "Env": [f"{k}={v}" for k, v in spec.env.items()], "WorkingDir": spec.cwd or "",
        "User": f"{spec.uid}:{spec.gid}", "Labels": labels, "HostConfig": host,
        "AttachStdout": False, "AttachStderr": False, "Tty": False, "OpenStdin": False,
    }


def parse_time(value: str | None) -> dt.datetime | None:
    """The engine's RFC 3339 time with nanoseconds; None for its zero time."""
    if not value or value.startswith("0001-"):
        return None
    text = value.rstrip("Z")
    main, _, frac = text.partition(".")
    frac = (frac + "000000")[:6]
    return dt.datetime.fromisoformat(f"{main}.{frac}").replace(tzinfo=dt.timezone.utc)


def exit_status(state: dict, started: dt.datetime) -> ExitStatus:
    """ExitStatus from an inspected container's State (pure)."""
    code = int(state.get("ExitCode") or 0)
    started_at = parse_time(state.get("StartedAt")) or started
    finished_at = parse_time(state.get("FinishedAt")) or now()
    if state.get("OOMKilled"):
        return ExitStatus(exit_code=137, reason="OOMKilled", started_at=started_at,
                          finished_at=finished_at, signal=9)
    signal = code - 128 if code > 128 else None
    return ExitStatus(exit_code=code, reason="Completed" if code == 0 else "Error",
                      started_at=started_at, finished_at=finished_at, signal=signal)


@dataclass
class DockerContainer(Container):
    id: str  # the kubelet's id
    engine_id: str
    started_at: dt.datetime
    done: asyncio.Future | None = None
    pump: asyncio.Task | None = None
    stopping: bool = False
    logf: object = None


class DockerRuntime(Runtime):
    def __init__(self, cluster: str, client: AsyncDocker | None = None) -> None:
        self.cluster = cluster
        self.owner = owner_id()
        self.client = client or AsyncDocker()
        self._containers: dict[str, DockerContainer] = {}

    def runs_images(self, spec: ContainerSpec, pod: dict, container: dict,
                    image_id: str | None) -> DockerContainerSpec:
        """The kubelet's hook (`kubelet.ImagePodWorker`): the spec with image and pod."""
        return with_image(spec, pod, container, image_id)

    async def start(self, spec: ContainerSpec) -> DockerContainer:
        if not isinstance(spec, DockerContainerSpec) or not spec.image:
            raise CreateContainerError("the docker runtime needs the container's image "
                                       "(a DockerContainerSpec)")
        body = container_config(spec, self.cluster, self.owner)
        name = f"lc-{self.cluster}-{spec.id[:16]}"
        try:
            created = await self.client.request("POST", "/containers/create", {"name": name},
                                                body=body)
        except DockerError as e:
            raise CreateContainerError(f"cannot create the container: {e.message}") from e
        engine_id = created["Id"]
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        c = DockerContainer(id=spec.id, engine_id=engine_id, started_at=now())
        self._containers[c.id] = c
        loop = asyncio.get_running_loop()
        try:
            await self.client.request("POST", f"/containers/{engine_id}/start")
        except DockerError as e:
            c.done = loop.create_future()
            c.done.set_result(ExitStatus(exit_code=128, reason="StartError",
                                         started_at=c.started_at, finished_at=now(),
                                         message=e.message))
            self._containers.pop(c.id, None)
            await self._remove(engine_id)
            return c
        except BaseException:
            await asyncio.shield(self._remove(engine_id))
            self._containers.pop(c.id, None)
            raise
        # the log exists once the container runs (GET pods/log of a running container)
        c.logf = open(spec.log_path, "ab")
        c.pump = asyncio.ensure_future(self._pump_logs(engine_id, c.logf))
        c.done = asyncio.ensure_future(self._supervise(c))
        return c

    async def _pump_logs(self, engine_id: str, logf) -> None:
        decoder = FrameDecoder()
        with logf:
            try:
                async for chunk in self.client.stream(
                        f"/containers/{engine_id}/logs",
                        {"follow": True, "stdout": True, "stderr": True, "timestamps": True}):
                    for stream, payload in decoder.feed(chunk):
                        _write_record(logf, stream, payload)
                    logf.flush()
            except DockerError as e:
                log.warning("logs of container %s ended early: %s", engine_id[:12], e.message)

    async def _supervise(self, c: DockerContainer) -> ExitStatus:
        try:
            while True:
                try:
                    await self.client.request("POST", f"/containers/{c.engine_id}/wait",
                                              timeout=None)
                    info = await self.client.request("GET", f"/containers/{c.engine_id}/json")
                    break
                except DockerError as e:
                    if e.status == 404:  # removed behind our back (e.g. by hand)
                        return ExitStatus(exit_code=137, reason="Error", started_at=c.started_at,
                                          finished_at=now(), message="container removed")
                    log.warning("waiting for container %s: %s", c.engine_id[:12], e.message)
                    await asyncio.sleep(1.0)
            if c.pump is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(c.pump), 5.0)
                c.pump.cancel()
            return exit_status(info.get("State") or {}, c.started_at)
        finally:
            if c.logf is not None:
                c.logf.close()  # also when the pump never ran
            self._containers.pop(c.id, None)
            await asyncio.shield(self._remove(c.engine_id))

    async def _remove(self, engine_id: str) -> None:
        with contextlib.suppress(DockerError):
            await self.client.request("DELETE", f"/containers/{engine_id}", {"force": True})

    async def wait(self, container: Container) -> ExitStatus:
        assert isinstance(container, DockerContainer) and container.done is not None
        return await asyncio.shield(container.done)

    async def stop(self, container: Container, grace_seconds: float) -> ExitStatus:
        assert isinstance(container, DockerContainer) and container.done is not None
        container.stopping = True
        if not container.done.done():
            try:
                # the engine sends SIGTERM, then SIGKILL after t seconds
                await self.client.request(
                    "POST", f"/containers/{container.engine_id}/stop",
                    {"t": max(0, math.ceil(grace_seconds))}, timeout=grace_seconds + 30)
            except DockerError as e:
                if e.status not in (304, 404):
                    log.warning("stopping container %s: %s", container.engine_id[:12], e.message)
        return await asyncio.shield(container.done)

    async def exec(self, container: Container, argv: list[str], timeout: float) -> int:
        """argv inside the running container (its user, env, namespaces); the exit code."""
        assert isinstance(container, DockerContainer) and container.done is not None
        if not argv:
            raise ExecError("no command given")
        if container.done.done():
            raise ExecError("the container is not running")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            created = await self.client.request(
                "POST", f"/containers/{container.engine_id}/exec",
                body={"Cmd": list(argv), "AttachStdout": False, "AttachStderr": False})
            exec_id = created["Id"]
            await self.client.request("POST", f"/exec/{exec_id}/start", body={"Detach": True})
            while True:
                info = await self.client.request("GET", f"/exec/{exec_id}/json")
                if not info.get("Running"):
                    break
                if loop.time() > deadline:
                    # the engine cannot stop an exec: its process is killed by pid
                    with contextlib.suppress(OSError, TypeError, ValueError):
                        if int(info.get("Pid") or 0) > 0:
                            os.kill(int(info["Pid"]), 9)
                    raise ExecError(f"command {' '.join(argv)!r} timed out")
                await asyncio.sleep(0.05)
        except DockerError as e:
            raise ExecError(f"cannot run {argv[0]!r}: {e.message}") from e
        code = info.get("ExitCode")
        if code is None:
            raise ExecError(f"cannot run {argv[0]!r}: no exit code")
        return int(code)

    async def close(self) -> None:
        running = list(self._containers.values())
        if running:
            await asyncio.gather(*(self.stop(c, 2.0) for c in running), return_exceptions=True)
        await self.client.close()


def _write_record(logf, stream: str, payload: bytes) -> None:
    """One engine log record ("<RFC3339Nano> <text>", newline-terminated unless partial)."""
    stamp, _, text = payload.partition(b" ")
    at = parse_time(stamp.decode(errors="replace")) or now()
    partial = not text.endswith(b"\n")
    text = text[:-1] if not partial else text
    name = "stderr" if stream == "stderr" else "stdout"
    while len(text) > _LINE_LIMIT:
        logf.write(format_log_line(at, name, text[:_LINE_LIMIT], partial=True))
        text = text[_LINE_LIMIT:]
    logf.write(format_log_line(at, name, text, partial=partial))


def cleanup_leftovers(client: SyncDocker | None = None) -> list[str]:
    """Remove containers and networks of local clusters whose process is gone."""
    client = client or SyncDocker()
    removed = []
    try:
        items = client.request("GET", "/containers/json",
                               {"all": True, "filters": {"label": [LABEL]}})
        for c in items or []:
            owner = (c.get("Labels") or {}).get(OWNER_LABEL, "")
            if not owner_alive(owner):
                with contextlib.suppress(DockerError):
                    client.request("DELETE", f"/containers/{c['Id']}", {"force": True})
                    removed.append(f"container {c['Id'][:12]}")
        nets = client.request("GET", "/networks", {"filters": {"label": [LABEL]}})
        for n in nets or []:
            owner = (n.get("Labels") or {}).get(OWNER_LABEL, "")
            if not owner_alive(owner):
                with contextlib.suppress(DockerError):
                    client.request("DELETE", f"/networks/{n['Id']}")
                    removed.append(f"network {n['Name']}")
    except DockerError as e:
        log.warning("cannot clean up Docker leftovers: %s", e.message)
    if removed:
        log.warning("removed Docker leftovers of local clusters that are gone: %s",
                    ", ".join(removed))
    return removed
