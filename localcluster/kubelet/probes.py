"""Container probes of the kubelet (startup, readiness, liveness), as Kubernetes 1.30 runs them.

Per running container (a restart gets fresh probes, as the kubelet's workers start over with a
new container ID):
- startupProbe: until it succeeds the container is ``started: false`` and the other probes do
  not run; ``failureThreshold`` failures in a row kill it (restarted per restart policy);
- readinessProbe: its result is the container's ``ready`` (false until the first success);
  a container without one is ready once started;
- livenessProbe: ``failureThreshold`` failures in a row kill it.
Probes run every ``periodSeconds`` after ``initialDelaySeconds`` (from the container's start),
each with ``timeoutSeconds``; a result changes after ``successThreshold`` / ``failureThreshold``
equal results in a row. Failures are ``Warning Unhealthy`` events ("Readiness probe failed:
..."). A probe that cannot run as specified (a port name the container does not declare, bad
numbers) is an ``Unhealthy`` "probe errored" event and its result is thrown away, as the kubelet
does: it never succeeds and never kills. grpc probes, and exec probes on a runtime without exec,
fail with an event saying so.

Handlers are run from the kubelet's side against the pod IP (the host reaches pod IPs in both
pod networks): httpGet (HTTP or HTTPS without certificate checks; success is a status from 200
to 399 — redirects are not followed), tcpSocket (a connection is success) and exec (through the
runtime's `exec`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
from dataclasses import dataclass, replace
from typing import Callable, Protocol

from localcluster.runtime.base import Container, ExecError, ExecNotSupported, Runtime

log = logging.getLogger(__name__)

KINDS = (("startupProbe", "Startup"), ("readinessProbe", "Readiness"),
         ("livenessProbe", "Liveness"))
HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
# name: (default, minimum), as the API defaults and validates them
NUMBERS = {"initialDelaySeconds": (0, 0), "periodSeconds": (10, 1), "timeoutSeconds": (1, 1),
           "successThreshold": (1, 1), "failureThreshold": (3, 1)}
USER_AGENT = "kube-probe/1.30"
_CONTROL = re.compile(r"[\x00-\x20\x7f]")  # not allowed raw in a request line or header


class ProbeError(Exception):
    """A probe cannot run as specified (the kubelet's "probe errored")."""


# --- parsing (pure) ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Action:
    handler: str  # exec | httpGet | tcpSocket | grpc
    host: str = ""
    port: int = 0
    scheme: str = "HTTP"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class Probe:
    kind: str  # Startup | Readiness | Liveness
    action: Action
    initial_delay: int = 0
    period: int = 10
    timeout: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace: int | None = None  # probe-level terminationGracePeriodSeconds


def resolve_port(port: object, container: dict) -> int:
    """A port number, or the name of one of the container's ports (IntOrString)."""
    if isinstance(port, str) and not port.isdigit():
        for p in container.get("ports") or []:
            if isinstance(p, dict) and p.get("name") == port:
                port = p.get("containerPort")
                break
        else:
            raise ProbeError(f"port {port!r} not found in the ports of container "
                             f"{container.get('name')!r}")
    try:
        number = int(port)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ProbeError(f"invalid port {port!r}") from None
    if isinstance(port, bool) or not 0 < number < 65536:
        raise ProbeError(f"invalid port number: {port!r}")
    return number


def _action(raw: dict, container: dict, pod_ip: str) -> Action:
    given = [h for h in HANDLERS if raw.get(h) is not None]
    if not given:
        raise ProbeError("no handler: one of exec, httpGet, tcpSocket or grpc is required")
    if len(given) > 1:
        raise ProbeError(f"more than one handler: {', '.join(given)}")
    handler = given[0]
    body = raw[handler]
    if not isinstance(body, dict):
        raise ProbeError(f"{handler} must be an object")
    if handler == "exec":
        command = body.get("command")
        if not isinstance(command, list) or not command:
            raise ProbeError("exec.command must be a non-empty list")
        return Action("exec", command=tuple(str(a) for a in command))
    if handler == "grpc":
        return Action("grpc", host=pod_ip, port=resolve_port(body.get("port"), container))
    host = body.get("host") or pod_ip
    if not isinstance(host, str):
        raise ProbeError(f"{handler}.host must be a string")
    port = resolve_port(body.get("port"), container)
    if handler == "tcpSocket":
        return Action("tcpSocket", host=host, port=port)
    scheme = str(body.get("scheme") or "HTTP").upper()
    if scheme not in ("HTTP", "HTTPS"):
        raise ProbeError(f"httpGet.scheme {body.get('scheme')!r}: expected HTTP or HTTPS")
    path = str(body.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    if not path.isascii() or _CONTROL.search(path):
        raise ProbeError(f"httpGet.path {path!r}: spaces, control and non-ASCII characters "
                         f"must be percent-encoded")
    headers = []
    for h in body.get("httpHeaders") or []:
        name = h.get("name") if isinstance(h, dict) else None
        value = str(h.get("value") or "") if isinstance(h, dict) else ""
        if (not isinstance(name, str) or not name or not name.isascii() or _CONTROL.search(name)
                or not value.isascii() or _CONTROL.search(value.replace(" ", ""))):
            raise ProbeError(f"httpGet.httpHeaders: bad header {h!r}")
        headers.append((name, value))
    return Action("httpGet", host=host, port=port, scheme=scheme, path=path,
                  headers=tuple(headers))


def parse_probe(kind: str, raw: object, container: dict, pod_ip: str) -> Probe:
    """One probe of `container` (kind: Startup | Readiness | Liveness); raises ProbeError."""
    if not isinstance(raw, dict):
        raise ProbeError("a probe must be an object")
    numbers = {}
    for name, (default, minimum) in NUMBERS.items():
        value = raw.get(name)
        if value is None:
            value = default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ProbeError(f"{name} must be an integer of at least {minimum}, not {value!r}")
        numbers[name] = value
    grace = raw.get("terminationGracePeriodSeconds")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int) or grace < 1):
        raise ProbeError(f"terminationGracePeriodSeconds must be a positive integer, not "
                         f"{grace!r}")
    return Probe(kind, _action(raw, container, pod_ip), numbers["initialDelaySeconds"],
                 numbers["periodSeconds"], numbers["timeoutSeconds"],
                 numbers["successThreshold"], numbers["failureThreshold"], grace)


class Threshold:
    """A probe's result changes only after enough equal results in a row."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.last: bool | None = None
        self.run = 0

    def observe(self, ok: bool) -> bool | None:
        """The new result when this one crosses its threshold, else None."""
        if ok == self.last:
            self.run += 1
        else:
            self.last, self.run = ok, 1
        needed = self.probe.success_threshold if ok else self.probe.failure_threshold
        return ok if self.run >= needed else None


# --- running handlers (I/O) ----------------------------------------------------------------------

async def _http_get(a: Action, timeout: float) -> tuple[bool, str]:
    url = f"{a.scheme.lower()}://{_hostport(a.host, a.port)}{a.path}"
    ctx = None
    if a.scheme == "HTTPS":  # as the kubelet: no certificate checks
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    headers = {"Host": _hostport(a.host, a.port), "User-Agent": USER_AGENT, "Accept": "*/*"}
    for name, value in a.headers:
        headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
        headers[name] = value
    request = f"GET {a.path} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "Connection: close\r\n\r\n"
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(a.host, a.port, ssl=ctx)
            writer.write(request.encode("latin-1"))
            await writer.drain()
            status_line = await reader.readline()
    except TimeoutError:
        return False, (f'Get "{url}": context deadline exceeded (Client.Timeout exceeded '
                       f"while awaiting headers)")
    except ssl.SSLError as e:  # (an OSError whose errno is not a socket's)
        return False, f'Get "{url}": tls: {e.reason or e}'
    except OSError as e:
        return False, f'Get "{url}": {_describe(e, a)}'
    finally:
        if writer is not None:
            await _close(writer)
    parts = status_line.decode("latin-1").split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return False, f'Get "{url}": malformed HTTP response {status_line[:80]!r}'
    code = int(parts[1])
    if 200 <= code < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {code}"


async def _tcp_connect(a: Action, timeout: float) -> tuple[bool, str]:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(a.host, a.port)
    except TimeoutError:
        return False, f"dial tcp {_hostport(a.host, a.port)}: i/o timeout"
    except OSError as e:
        return False, _describe(e, a)
    await _close(writer)
    return True, ""


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):  # a peer that never completes a TLS close
            await writer.wait_closed()


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _describe(e: Exception, a: Action) -> str:
    if isinstance(e, OSError) and e.errno:  # asyncio's own strerror names no cause
        return f"dial tcp {_hostport(a.host, a.port)}: connect: {os.strerror(e.errno).lower()}"
    return f"dial tcp {_hostport(a.host, a.port)}: {e}"


async def run_action(a: Action, timeout: float, runtime: Runtime,
                     handle: Container) -> tuple[bool, str]:
    """(success, message) of one probe run."""
    if a.handler == "httpGet":
        return await _http_get(a, timeout)
    if a.handler == "tcpSocket":
        return await _tcp_connect(a, timeout)
    if a.handler == "exec":
        try:
            code = await runtime.exec(handle, list(a.command), timeout)
        except (ExecNotSupported, ExecError) as e:
            return False, str(e)
        if code == 0:
            return True, ""
        return False, f"command {' '.join(a.command)!r} exited with {code}"
    return False, "grpc probes are not supported by the local cluster"


# --- the probes of one running container ---------------------------------------------------------

class ProbeHost(Protocol):
    """What the probes need of the pod worker."""

    def probe_event(self, container: str, etype: str, reason: str, message: str) -> None: ...

    def probe_changed(self) -> None: ...  # cs changed: push the pod status

    pod_ip: str | None  # the pod's current IP


class ContainerProbes:
    """Probes of one running container instance; sets ``cs["started"]`` and ``cs["ready"]``.

    `run` ends only when cancelled (the container ended) — after a startup or liveness failure
    it has asked `kill` to stop the container and holds, as the kubelet does.
    """

    def __init__(self, host: ProbeHost, container: dict, cs: dict, pod_ip: str,
                 runtime: Runtime, handle: Container,
                 kill: Callable[[str, int | None], None],
                 on_started: Callable[[], None] | None = None) -> None:
        self.host, self.cs, self.name = host, cs, container["name"]
        self.pod_ip = pod_ip  # probes without a host of their own follow the pod's IP
        self.runtime, self.handle, self.kill = runtime, handle, kill
        self.on_started = on_started
        self.killed = False  # by a failed startup or liveness probe
        self.probes: dict[str, Probe | None] = {}
        self.broken: dict[str, tuple[str, int]] = {}  # kind -> (why, period)
        for field, kind in KINDS:
            raw = container.get(field)
            if raw is None:
                continue
            try:
                self.probes[kind] = parse_probe(kind, raw, container, pod_ip)
            except ProbeError as e:
                self.probes[kind] = None  # present but unusable: never succeeds, never kills
                period = raw.get("periodSeconds") if isinstance(raw, dict) else None
                if isinstance(period, bool) or not isinstance(period, int) or period < 1:
                    period = NUMBERS["periodSeconds"][0]
                self.broken[kind] = (str(e), period)
        loop = asyncio.get_running_loop()
        self.start = loop.time()

    def initial(self) -> None:
        """The status right after the start (before any probe ran)."""
        self.cs["started"] = "Startup" not in self.probes
        self.cs["ready"] = self.cs["started"] and "Readiness" not in self.probes

    async def run(self) -> None:
        if "Startup" in self.probes:
            await self._loop("Startup")  # returns once the container has started
            self.cs["started"] = True
            self.cs["ready"] = "Readiness" not in self.probes
            self.host.probe_changed()
        if self.on_started is not None:
            self.on_started()
        loops = [self._loop(k) for k in ("Readiness", "Liveness") if k in self.probes]
        await asyncio.gather(*loops)
        await asyncio.Future()  # nothing to probe: until cancelled

    async def _loop(self, kind: str) -> None:
        probe = self.probes[kind]
        loop = asyncio.get_running_loop()
        if probe is None:  # present but unusable: the kubelet reports it at every period
            why, period = self.broken[kind]
            log.warning("%s probe of container %s cannot run: %s", kind, self.name, why)
            while True:
                self.host.probe_event(self.name, "Warning", "Unhealthy",
                                      f"{kind} probe errored: {why}")
                await asyncio.sleep(period)
        await asyncio.sleep(max(0.0, self.start + probe.initial_delay - loop.time()))
        threshold = Threshold(probe)
        while True:
            action = probe.action
            current = self.host.pod_ip
            if action.host and action.host == self.pod_ip and current and current != self.pod_ip:
                action = replace(action, host=current)  # the pod's IP changed (docker network)
            ok, message = await run_action(action, probe.timeout, self.runtime, self.handle)
            if not ok:
                self.host.probe_event(self.name, "Warning", "Unhealthy",
                                      f"{kind} probe failed: {message}")
            result = threshold.observe(ok)
            if result is not None:
                log.debug("%s probe of container %s: %s", kind, self.name,
                          "success" if result else "failure")
                if kind == "Startup" and result:
                    return
                if kind == "Readiness":
                    if self.cs.get("ready") != result:
                        self.cs["ready"] = result
                        self.host.probe_changed()
                elif not result:  # startup or liveness failed: kill, then hold
                    self.killed = True
                    self.kill(f"failed {kind.lower()} probe", probe.termination_grace)
                    await asyncio.Future()  # hold until the container is gone
            await asyncio.sleep(probe.period)
