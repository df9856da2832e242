"""Companion services (CONTRACTS §10): a container a task names to run next to its algorithm.

Pure: the payload's ``service`` object is checked here (``parse_service``, called by
``node.models`` for rich payloads) and turned into a native sidecar of the run's pod
(``add_service``, called by ``node.manifests.build_job``).

Why a native sidecar (an init container with ``restartPolicy: Always``) with a startup probe: the
kubelet starts the next container only once the sidecar's startup probe has succeeded, so the
algorithm's first request finds the service ready; and a native sidecar is stopped after the
algorithm ends without holding the Job open. The service shares the pod's network namespace, so
the algorithm reaches it at 127.0.0.1 and nothing new is exposed: the NetworkPolicy (§6) stays as
it is (no ingress; the kubelet's probes are not subject to it).

A service that never passes its startup probe is killed by the kubelet after
``failureThreshold × periodSeconds`` ≈ ``ready_timeout_seconds`` and restarted (it is a sidecar);
``node.status`` reads that first termination of a never-started service as the run's failure.
What it needs for the message travels in the pod annotation ``v6.service`` (the node keeps only
metadata and status of the pods it watches).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from node.config import FILE_DATABASE_TYPES, NodeConfig, env_suffix
from node.models import MAX_IMAGE_CHARS, TaskStatus, image_allowed, show, valid_image_reference

if TYPE_CHECKING:
    from node.models import TaskCommand

SERVICE_NAME = "service"            # the sidecar container's name
SERVICE_ANNOTATION = "v6.service"   # on the pod: what the status needs to explain a failure
SERVICE_HOST = "127.0.0.1"          # same pod, same network namespace
# its scratch space where the algorithm has its own (§5); not /tmp, which would hide whatever a
# local-process image keeps under /tmp of the host (the stand-in runs containers on its files)
SERVICE_TMP = "/app/tmp"
SERVICE_RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"},
                     "limits": {"cpu": "500m", "memory": "256Mi"}}
SERVICE_TMP_LIMIT = "64Mi"
DEFAULT_READY_TIMEOUT = 60
MAX_PROBES = 120                    # startup probe attempts; longer timeouts probe less often
READINESS_PERIOD = 5
MAX_ENV = 64
MAX_ENV_VALUE = 4096
MAX_HTTP_PATH = 1024

FIELDS = frozenset({"image", "port", "readiness", "env", "databases", "ready_timeout_seconds"})
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}", re.ASCII)
# What the node sets in the pods itself (CONTRACTS §5, §9, §10): a task may not override it.
RESERVED_ENV = frozenset({"RUN_ID", "TASK_ID", "NODE_ID", "INPUT_FILE", "TOKEN_FILE", "OUTPUT_DIR",
                          "OUTPUT_FILE", "TMP_DIR", "DATABASE_LABELS", "HOST", "PORT", "API_PATH",
                          "PROGRESS_FILE", "TMPDIR", "POD_IP"})
RESERVED_ENV_PREFIXES = ("SERVICE_", "DATABASE_URI_", "DATABASE_TYPE_", "LIVE_")
_HTTP_PATH_RE = re.compile(r"/[\x21-\x7e]*", re.ASCII)  # printable, no spaces


@dataclass(frozen=True)
class ServiceSpec:
    image: str
    port: int
    http_path: str | None             # None: a TCP connect is the readiness check
    env: tuple[tuple[str, str], ...]
    databases: tuple[str, ...]
    ready_timeout_seconds: int

    @property
    def check(self) -> str:
        """The readiness check in words, for messages."""
        if self.http_path is None:
            return f"TCP connect to port {self.port}"
        return f"HTTP GET {self.http_path} on port {self.port}"


# --- the payload ------------------------------------------------------------------------------

def parse_service(c: Any, value: object, deadline: int) -> ServiceSpec | None:
    """The payload's ``service`` (None when absent). ``c`` is the payload's ``models._Checker``;
    every refusal is ``c.fail(...)``, naming the field."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise c.fail(f"service must be an object, got {_type(value)}")
    unknown = sorted(set(value) - FIELDS, key=str)
    if unknown:
        raise c.fail(f"service has unknown fields {show(unknown, 120)} (known: {', '.join(sorted(FIELDS))})")
    for key in ("image", "port"):
        if key not in value:
            raise c.fail(f"service.{key} is required")
    image = _image(c, value["image"])
    port = value["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise c.fail(f"service.port must be an integer from 1 to 65535, got {show(port)}")
    live = c.config.live
    if live.enabled and port in (live.pub_port, live.rep_port):
        raise c.fail(f"service.port {port} is taken by the live channel's sidecar in the same pod")
    http_path = _readiness(c, value.get("readiness"))
    env = _env(c, value.get("env"))
    dbs = value.get("databases")
    databases = () if dbs is None else c.databases("service.databases", dbs)
    timeout = _timeout(c, value.get("ready_timeout_seconds"), deadline)
    # the node's policy last, as for the algorithm: a well-formed payload it refuses is "not allowed"
    if not image_allowed(image, c.config.images.allowed):
        raise c.fail(f"service.image {show(image)} is not on this node's allow-list", TaskStatus.NOT_ALLOWED)
    for label in databases:
        if c.config.database(label) is None:
            raise c.fail(f"service.databases: database {show(label)} is not available on this node",
                         TaskStatus.NOT_ALLOWED)
    return ServiceSpec(image=image, port=port, http_path=http_path, env=env, databases=databases,
                       ready_timeout_seconds=timeout)


def _type(value: object) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def _image(c: Any, value: object) -> str:
    if not isinstance(value, str):
        raise c.fail(f"service.image must be a string, got {_type(value)}")
    if not value:
        raise c.fail("service.image must not be empty")
    if len(value) > MAX_IMAGE_CHARS:
        raise c.fail(f"service.image is too long ({len(value)} characters, at most {MAX_IMAGE_CHARS})")
    if not valid_image_reference(value):
        raise c.fail(f"service.image {show(value)} is not a valid image reference")
    return value


def _readiness(c: Any, value: object) -> str | None:
    """The HTTP path to probe, or None for a TCP check (the default)."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) != 1 or not set(value) <= {"http_path", "tcp"}:
        raise c.fail('service.readiness must be {"http_path": "/ready"} or {"tcp": true}, '
                     f"got {show(value)}")
    if "tcp" in value:
        if value["tcp"] is not True:
            raise c.fail(f"service.readiness.tcp must be true, got {show(value['tcp'])}")
        return None
    path = value["http_path"]
    if not isinstance(path, str) or len(path) > MAX_HTTP_PATH or _HTTP_PATH_RE.fullmatch(path) is None:
        raise c.fail("service.readiness.http_path must be a path starting with '/' (printable ASCII, "
                     f"no spaces, at most {MAX_HTTP_PATH} characters), got {show(path)}")
    return path


def _env(c: Any, value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise c.fail(f"service.env must be an object of names to strings, got {_type(value)}")
    if len(value) > MAX_ENV:
        raise c.fail(f"service.env has {len(value)} variables (at most {MAX_ENV})")
    out = []
    for name, text in value.items():
        if not isinstance(name, str) or ENV_NAME_RE.fullmatch(name) is None:
            raise c.fail(f"service.env name {show(name)} is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)")
        if name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIXES):
            raise c.fail(f"service.env name {name} is set by the node and may not be overridden")
        if not isinstance(text, str):
            raise c.fail(f"service.env.{name} must be a string, got {_type(text)}")
        if len(text) > MAX_ENV_VALUE or "\0" in text:
            raise c.fail(f"service.env.{name} must be at most {MAX_ENV_VALUE} characters without NUL")
        out.append((name, text))
    return tuple(out)


def _timeout(c: Any, value: object, deadline: int) -> int:
    if value is None:
        return min(DEFAULT_READY_TIMEOUT, deadline)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise c.fail(f"service.ready_timeout_seconds must be a positive integer, got {show(value)}")
    if value > deadline:
        raise c.fail(f"service.ready_timeout_seconds {value} is more than the run's deadline ({deadline}s)")
    return value


# --- the pod ----------------------------------------------------------------------------------

def probe_timing(ready_timeout: int) -> tuple[int, int]:
    """(periodSeconds, failureThreshold) of the startup probe: their product covers the timeout,
    with a probe every second up to MAX_PROBES attempts."""
    period = max(1, math.ceil(ready_timeout / MAX_PROBES))
    return period, max(1, math.ceil(ready_timeout / period))


def _handler(svc: ServiceSpec) -> dict[str, Any]:
    if svc.http_path is None:
        return {"tcpSocket": {"port": svc.port}}
    return {"httpGet": {"path": svc.http_path, "port": svc.port, "scheme": "HTTP"}}


def _database_mounts(svc: ServiceSpec, pod_spec: dict, config: NodeConfig,
                     input_dir: str) -> list[dict[str, Any]]:
    """Read-only mounts of the service's databases, reusing the algorithm's volumes when they
    hold the same database (hostPath) or the one claim (pvc mode)."""
    volumes = pod_spec["volumes"]
    mounts = []
    for i, label in enumerate(svc.databases):
        db = config.database(label)
        if db is None:
            raise ValueError(f"database {label!r} is not configured")
        mount = {"mountPath": f"{input_dir}/{label}", "readOnly": True}
        if config.storage.mode == "pvc":
            mounts.append({"name": "data", **mount, "subPath": db.uri})
            continue
        name = next((v["name"] for v in volumes if (v.get("hostPath") or {}).get("path") == db.uri), None)
        if name is None:
            name = f"service-db-{i}"
            kind = "File" if db.type in FILE_DATABASE_TYPES else "Directory"
            volumes.append({"name": name, "hostPath": {"path": db.uri, "type": kind}})
        mounts.append({"name": name, **mount})
    return mounts


def _service_env(svc: ServiceSpec, cmd: TaskCommand, config: NodeConfig,
                 input_dir: str) -> list[dict[str, str]]:
    env = dict(svc.env)
    env.update({"RUN_ID": str(cmd.run_id), "SERVICE_PORT": str(svc.port), "TMPDIR": SERVICE_TMP,
                "DATABASE_LABELS": ",".join(svc.databases)})
    for label in svc.databases:
        db = config.database(label)
        env[f"DATABASE_URI_{env_suffix(label)}"] = f"{input_dir}/{label}"
        env[f"DATABASE_TYPE_{env_suffix(label)}"] = db.type if db is not None else ""
    return [{"name": k, "value": v} for k, v in env.items()]


def algorithm_env(svc: ServiceSpec) -> list[dict[str, str]]:
    return [{"name": "SERVICE_HOST", "value": SERVICE_HOST},
            {"name": "SERVICE_PORT", "value": str(svc.port)},
            {"name": "SERVICE_URL", "value": f"http://{SERVICE_HOST}:{svc.port}"}]


def annotation(svc: ServiceSpec) -> str:
    _, failures = probe_timing(svc.ready_timeout_seconds)
    return json.dumps({"image": svc.image, "ready_timeout_seconds": svc.ready_timeout_seconds,
                       "check": svc.check, "probe_failures": failures}, sort_keys=True)


def build_service(svc: ServiceSpec, cmd: TaskCommand, config: NodeConfig, pod_spec: dict,
                  security_context: dict, input_dir: str) -> dict[str, Any]:
    period, failures = probe_timing(svc.ready_timeout_seconds)
    handler = _handler(svc)
    return {
        "name": SERVICE_NAME,
        "image": svc.image,
        "imagePullPolicy": "IfNotPresent",
        "restartPolicy": "Always",
        "env": _service_env(svc, cmd, config, input_dir),
        "ports": [{"name": SERVICE_NAME, "containerPort": svc.port, "protocol": "TCP"}],
        "volumeMounts": [*_database_mounts(svc, pod_spec, config, input_dir),
                         {"name": "service-tmp", "mountPath": SERVICE_TMP, "readOnly": False}],
        "resources": {k: dict(v) for k, v in SERVICE_RESOURCES.items()},
        "securityContext": security_context,
        "startupProbe": {**handler, "initialDelaySeconds": 0, "periodSeconds": period,
                         "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": failures},
        "readinessProbe": {**handler, "periodSeconds": READINESS_PERIOD, "timeoutSeconds": 1,
                           "successThreshold": 1, "failureThreshold": 3},
    }


def add_service(template: dict[str, Any], cmd: TaskCommand, config: NodeConfig,
                security_context: dict, input_dir: str) -> None:
    """Add the task's companion service to a pod template made by ``build_job``: the sidecar after
    any other init container, its scratch volume, the algorithm's SERVICE_* env, the annotation."""
    svc = cmd.service
    if svc is None:
        return
    spec = template["spec"]
    container = build_service(svc, cmd, config, spec, security_context, input_dir)
    spec["volumes"].append({"name": "service-tmp", "emptyDir": {"sizeLimit": SERVICE_TMP_LIMIT}})
    spec.setdefault("initContainers", []).append(container)
    spec["containers"][0]["env"].extend(algorithm_env(svc))
    template.setdefault("metadata", {}).setdefault("annotations", {})[SERVICE_ANNOTATION] = annotation(svc)


def read_annotation(annotations: object) -> dict[str, Any] | None:
    """The ``v6.service`` annotation of a pod, or None (no service, or not readable)."""
    if not isinstance(annotations, dict) or not isinstance(annotations.get(SERVICE_ANNOTATION), str):
        return None
    try:
        value = json.loads(annotations[SERVICE_ANNOTATION])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def ended_detail(info: dict, reason: str, code: int | None, message: str,
                 ran_seconds: float | None) -> str:
    """Why a service that ended before it was ever ready failed the run (for ``node.status``)."""
    image, check = info.get("image", "?"), info.get("check", "its readiness check")
    timeout = info.get("ready_timeout_seconds")
    # the kubelet stops a service whose startup probe gave up (SIGTERM, then SIGKILL) once the
    # last probe failed, one period before the window ends: it died of one of those signals, or
    # exited cleanly on SIGTERM after about that long (timestamps have whole seconds)
    window = False
    if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0 and ran_seconds is not None:
        window = ran_seconds >= timeout - probe_timing(timeout)[0] - 1
    if code in (137, 143) or (code == 0 and window):
        return (f"companion service {image} did not become ready within {timeout}s (startup probe "
                f"failed {info.get('probe_failures', '?')} times: {check})")
    text = f"companion service {image} exited with code {code} before it became ready ({check})"
    return ": ".join(p for p in (text, reason, message) if p)
