"""Container supervision of the kubelet's pod worker: image, configuration, start, probes
(`kubelet_probes`), restarts."""
from __future__ import annotations

import asyncio
import secrets as pysecrets

from localcluster.kubelet.logs import log_file
from localcluster.kubelet.probes import ContainerProbes
from localcluster.kubelet.spec import (ConfigError, build_argv, build_env, cpu_limit_millis,
                                       identity, memory_limit)
from localcluster.kubelet.status import rfc3339, waiting
from localcluster.kubelet.volumes import Volume, container_mounts
from localcluster.runtime.fake_spec import FakeInput
from localcluster.runtime.registry import ImageNotFound, InvalidImageName
from localcluster.apiserver.resources import CONFIGMAPS, SECRETS
from localcluster.runtime.base import Container, ContainerSpec, CreateContainerError, ExitStatus


class Backoff:
    def __init__(self, initial: float, cap: float) -> None:
        self.initial, self.cap, self.n = initial, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.initial * (2 ** self.n))
        self.n += 1
        return delay


class ContainerRunner:
    """Mixin of PodWorker (which provides k, pod, running, statuses, sidecars, _push...):
    runs one container through the kubelet's runtime."""

    async def _container_spec(self, c: dict, cs: dict, volumes: dict[str, Volume],
                              restart: int) -> ContainerSpec:
        """Resolve the image and configuration; waits (with back-off) until both work."""
        image_ref = c.get("image", "")
        name = c["name"]
        backoff = Backoff(self.k.config.backoff_initial, self.k.config.backoff_max)
        pulled = False
        while True:
            try:
                image = self.k.registry.resolve(image_ref)
            except InvalidImageName as e:
                self._waiting(cs, "InvalidImageName", str(e))
                self._event("Warning", "InspectFailed", str(e), name)
                self._event("Warning", "Failed", "Error: InvalidImageName", name)
                await asyncio.sleep(backoff.next())
                continue
            except ImageNotFound as e:
                self._event("Normal", "Pulling", f'Pulling image "{image_ref}"', name)
                self._waiting(cs, "ErrImagePull", str(e))
                self._event("Warning", "Failed", f'Failed to pull image "{image_ref}": {e}', name)
                self._event("Warning", "Failed", "Error: ErrImagePull", name)
                await asyncio.sleep(backoff.next())
                msg = f'Back-off pulling image "{image_ref}"'
                self._waiting(cs, "ImagePullBackOff", msg)
                self._event("Normal", "BackOff", msg, name)
                self._event("Warning", "Failed", "Error: ImagePullBackOff", name)
                await asyncio.sleep(backoff.next())
                continue
            if not pulled:
                self._event("Normal", "Pulled", f'Container image "{image_ref}" already present '
                                                f"on machine", name)
                pulled = True
            cs["imageID"] = image.image_id
            try:
                view = self._pod_view()
                env = build_env(view, c, image, self.k.lookup(SECRETS), self.k.lookup(CONFIGMAPS),
                                self.k.allocatable, service_env=self.k.service_env(self))
                ident = identity(view, c, image)
                try:
                    argv = build_argv(c, image, env)
                except ConfigError:
                    if not self.fake:
                        raise
                    argv = []  # a fake image needs no command
                # the pod's hosts/resolv.conf first: a volume mounted there by the container wins
                mounts = [*self.dns_mounts, *container_mounts(view, c, volumes, env)]
            except (ConfigError, OSError) as e:
                self._waiting(cs, "CreateContainerConfigError", str(e))
                self._event("Warning", "Failed", f"Error: {e}", name)
                await self._wait_poke(backoff.next())
                continue
            return ContainerSpec(
                id=pysecrets.token_hex(32), argv=argv, env=env,
                log_path=log_file(self.k.state_dir, self.pod, name, restart),
                cwd=c.get("workingDir") or image.workdir, mounts=mounts, uid=ident.uid,
                gid=ident.gid, groups=ident.groups, root_readonly=ident.root_readonly,
                no_new_privs=ident.no_new_privs, capabilities=ident.capabilities,
                memory_limit=memory_limit(c), cpu_limit_millis=cpu_limit_millis(c),
                netns=self.netns, fake=self._fake_input(c, image))

    def _fake_input(self, c: dict, image) -> FakeInput | None:
        """What the fake runtime needs of a container in a fake pod; None in other pods."""
        if not self.fake:
            return None
        native = c.get("restartPolicy") == "Always" and any(
            cs["name"] == c["name"] for cs in self.init_statuses)
        return FakeInput(name=c["name"],
                         annotations=dict((self.pod.get("metadata") or {}).get("annotations")
                                          or {}),
                         defaults=dict(image.fake or {}), native_sidecar=native)

    async def _supervise(self, c: dict, cs: dict, volumes: dict[str, Volume], policy: str,
                         is_init: bool, started: asyncio.Event | None = None) -> int:
        """Run one container, restarting it per policy; returns its final exit code."""
        name = c["name"]
        backoff = Backoff(self.k.config.backoff_initial, self.k.config.backoff_max)
        while True:
            spec = await self._container_spec(c, cs, volumes, cs["restartCount"])
            try:
                handle = await self.k.runtime.start(spec)
            except CreateContainerError as e:
                self._waiting(cs, "CreateContainerError", str(e))
                self._event("Warning", "Failed", f"Error: {e}", name)
                await asyncio.sleep(backoff.next())
                continue
            self.running[name] = handle
            cs["containerID"] = f"local://{spec.id}"
            cs["state"] = {"running": {"startedAt": rfc3339(handle.started_at)}}
            probes = None
            if is_init:  # a run-to-completion init container has no probes (API validation)
                cs["started"], cs["ready"] = True, False
            else:
                probes = ContainerProbes(self, c, cs, self.pod_ip or "", self.k.runtime, handle,
                                         self._probe_kill(name, handle),
                                         started.set if started is not None else None)
                probes.initial()
            self._event("Normal", "Created", f"Created container {name}", name)
            self._event("Normal", "Started", f"Started container {name}", name)
            self._push()
            probing = asyncio.ensure_future(probes.run()) if probes is not None else None
            try:
                st = await self.k.runtime.wait(handle)
            finally:
                # cancelled again until done: a cancel that lands as an awaited future completes
                # can be lost (asyncio.wait_for of Python 3.11)
                while probing is not None and not probing.done():
                    probing.cancel()
                    await asyncio.wait([probing], timeout=1.0)
            if self.running.get(name) is not handle:
                return st.exit_code  # stopped by _kill_all, which records the status
            del self.running[name]
            self._set_terminated(cs, handle, st)
            if st.reason == "StartError":
                self._event("Warning", "Failed", f"Error: failed to start container \"{name}\": "
                                                 f"{st.message}", name)
            # a container killed for a failed probe is restarted unless the policy is Never
            killed = probes is not None and probes.killed
            restart = policy == "Always" or (policy == "OnFailure" and (st.exit_code != 0
                                                                         or killed))
            if not restart:
                self._push()
                return st.exit_code
            delay = backoff.next()
            cs["lastState"] = {"terminated": cs["state"]["terminated"]}
            cs["state"] = waiting(
                "CrashLoopBackOff", f"back-off {delay:g}s restarting failed container={name} "
                                    f"pod={self.name}_{self.ns}({self.uid})")
            self._event("Warning", "BackOff", f"Back-off restarting failed container {name} in "
                                              f"pod {self.name}_{self.ns}({self.uid})", name)
            self._push()
            await asyncio.sleep(delay)
            cs["restartCount"] += 1

    def _probe_kill(self, name: str, handle: Container):
        """How the probes of container `name` stop it after a failed startup/liveness probe."""
        def kill(why: str, probe_grace: int | None) -> None:
            message = f"Container {name} {why}"
            if (self.restart_policy != "Never"
                    or any(cs["name"] == name for cs in self.init_statuses)):
                message += ", will be restarted"
            self._event("Normal", "Killing", message, name)
            grace = probe_grace if probe_grace is not None else (self.pod.get("spec") or {}).get(
                "terminationGracePeriodSeconds", 30)
            # a task of the pod's, not of the probes: they are cancelled when the container ends
            task = asyncio.ensure_future(self.k.runtime.stop(handle, float(grace)))
            self._kills.add(task)
            task.add_done_callback(self._kills.discard)
        return kill

    def probe_event(self, container: str, etype: str, reason: str, message: str) -> None:
        self._event(etype, reason, message, container)

    def probe_changed(self) -> None:
        self._push()

    # --- status ---

    def _status_of(self, name: str) -> dict | None:
        for cs in self.statuses + self.init_statuses:
            if cs["name"] == name:
                return cs
        return None

    def _set_terminated(self, cs: dict, handle: Container, st: ExitStatus) -> None:
        term = {"exitCode": st.exit_code, "reason": st.reason,
                "startedAt": rfc3339(st.started_at), "finishedAt": rfc3339(st.finished_at),
                "containerID": cs.get("containerID")}
        if st.message:
            term["message"] = st.message
        if st.signal:
            term["signal"] = st.signal
        cs["state"] = {"terminated": term}
        # a run-to-completion init container is ready once it succeeded (prober manager)
        cs["ready"] = st.exit_code == 0 and cs["name"] not in self.sidecars and any(
            i is cs for i in self.init_statuses)
        cs["started"] = False

    def _waiting(self, cs: dict, reason: str, message: str | None) -> None:
        cs["state"] = waiting(reason, message)
        cs["ready"] = False
        self._push()

    def _event(self, etype: str, reason: str, message: str, container: str | None = None) -> None:
        path = None
        if container is not None:
            kind = "initContainers" if any(cs["name"] == container
                                           for cs in self.init_statuses) else "containers"
            path = f"spec.{kind}{{{container}}}"
        self.k.events.record(self.pod, etype, reason, message, field_path=path)
