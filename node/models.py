"""Task payloads, statuses and reports: the node's view of CONTRACTS §2.

``parse_command`` turns a raw ``command`` payload into a ``TaskCommand`` or raises
``PayloadError``; it never raises anything else, whatever the payload, so the node never dies on
one. Validation is strict: unknown top-level fields are refused too, to catch typos (a misspelt
optional field would otherwise be silently ignored).
"""
from __future__ import annotations

import enum
import fnmatch
import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from node.config import DNS_LABEL_RE, LABEL_RE, NodeConfig, parse_quantity
from node.errors import PayloadError

MAX_ID = 2**53
MAX_TOKEN_BYTES = 16 * 1024
MAX_IMAGE_CHARS = 512

if TYPE_CHECKING:
    from node.companion import ServiceSpec


class TaskStatus(str, enum.Enum):
    """vantage6's run statuses (the values go on the wire)."""
    PENDING = "pending"
    INITIALIZING = "initializing"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    START_FAILED = "start failed"
    NO_DOCKER_IMAGE = "non-existing Docker image"
    CRASHED = "crashed"
    KILLED = "killed by user"
    NOT_ALLOWED = "not allowed"
    UNKNOWN_ERROR = "unknown error"

    def __str__(self) -> str:
        return self.value


_RUNNING = frozenset({TaskStatus.PENDING, TaskStatus.INITIALIZING, TaskStatus.ACTIVE})


def is_terminal(status: TaskStatus | str) -> bool:
    """The run is over (completed or failed in any way)."""
    return TaskStatus(status) not in _RUNNING


def has_failed(status: TaskStatus | str) -> bool:
    """As vantage6: anything but pending, initializing, active or completed."""
    return TaskStatus(status) not in _RUNNING | {TaskStatus.COMPLETED}


@dataclass(frozen=True)
class Resources:
    """What the algorithm container gets: requests/limits as Kubernetes quantities, and GPUs."""
    requests: dict[str, str]
    limits: dict[str, str]
    gpu: int = 0


@dataclass(frozen=True)
class TaskCommand:
    run_id: int
    task_id: int
    parent_id: int | None
    image: str
    arguments: tuple[str, ...]
    input_bytes: bytes = field(repr=False)
    databases: tuple[str, ...]
    token: str = field(repr=False)
    resources: Resources
    deadline_seconds: int
    shape: str                      # "prototype" | "rich"
    service: ServiceSpec | None = None  # a companion service (rich payloads only, CONTRACTS §10)


@dataclass(frozen=True)
class Result:
    run_id: int
    task_id: int
    parent_id: int | None
    status: TaskStatus
    data: str = field(repr=False)
    logs: str = field(repr=False)
    # what ran and under which isolation (node.provenance; CONTRACTS §2); None for a command
    # refused before anything ran
    provenance: dict | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = {"run_id": self.run_id, "task_id": self.task_id, "parent_id": self.parent_id,
               "status": TaskStatus(self.status).value, "data": self.data, "logs": self.logs}
        if self.provenance is not None:
            out["provenance"] = self.provenance
        return out


@dataclass(frozen=True)
class StatusReport:
    node_id: str
    run_id: int
    task_id: int
    parent_id: int | None
    status: TaskStatus
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "run_id": self.run_id, "task_id": self.task_id,
                "parent_id": self.parent_id, "status": TaskStatus(self.status).value, "detail": self.detail}


# --- validation helpers ----------------------------------------------------------------------

PROTOTYPE_FIELDS = frozenset({"run_id", "task_info", "image", "docker_input", "tmp_vol_name", "token",
                              "databases_to_use"})
RICH_REQUIRED = frozenset({"run_id", "task_id", "image", "databases", "token"})
RICH_FIELDS = RICH_REQUIRED | {"parent_id", "arguments", "input", "resources", "deadline_seconds", "service"}
_PROTOTYPE_ONLY = PROTOTYPE_FIELDS - RICH_FIELDS
_RICH_ONLY = RICH_FIELDS - PROTOTYPE_FIELDS

# Docker image reference grammar (distribution/reference), ASCII only. The first component is a
# registry host only when it has a "." or ":" or is "localhost" (as Docker and the kubelet read it).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_RE = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
                        r"(?::[0-9]+)?", re.ASCII)
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?", re.ASCII)


_SHA256 = re.compile(r"@sha256:[0-9a-f]{64}$")


def has_digest(ref: str) -> bool:
    """Whether a reference names its content: ``name[:tag]@sha256:<64 hex>``."""
    return _SHA256.search(ref) is not None


def valid_image_reference(ref: str) -> bool:
    first, slash, rest = ref.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return _DOMAIN_RE.fullmatch(first) is not None and _PATH_RE.fullmatch(rest) is not None
    return _PATH_RE.fullmatch(ref) is not None


def show(value: object, limit: int = 60) -> str:
    """A safe, short rendering of untrusted input for error messages (escapes lookalikes, NULs)."""
    text = ascii(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "object"}.get(type(value), type(value).__name__)


class _Checker:
    """Validation of one payload; every failure raises PayloadError with the run id if known."""

    def __init__(self, raw: dict, config: NodeConfig) -> None:
        self.raw = raw
        self.config = config
        self.run_id: int | None = None

    def fail(self, message: str, status: TaskStatus = TaskStatus.FAILED) -> PayloadError:
        where = f"run {self.run_id}: " if self.run_id is not None else ""
        return PayloadError(f"{where}{message}", run_id=self.run_id, status=status.value)

    def id(self, name: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{name} must be an integer, got {_type_name(value)}")
        if not 0 < value < MAX_ID:
            raise self.fail(f"{name} must be a positive integer below 2**53, got {show(value)}")
        return value

    def str_field(self, name: str, value: object, *, max_len: int = 1 << 20) -> str:
        if not isinstance(value, str):
            raise self.fail(f"{name} must be a string, got {_type_name(value)}")
        if len(value) > max_len:
            raise self.fail(f"{name} is too long ({len(value)} characters, at most {max_len})")
        return value

    def argument(self, name: str, value: object) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(f"{name} must be a string or a number, got {_type_name(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(f"{name} must be a finite number")
        text = value if isinstance(value, str) else str(value)
        if "\0" in text:
            raise self.fail(f"{name} contains a NUL character")
        return text

    def databases(self, name: str, value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(f"{name} must be a list of database labels, got {_type_name(value)}")
        labels: list[str] = []
        for i, label in enumerate(value):
            if not isinstance(label, str):
                raise self.fail(f"{name}[{i}] must be a string, got {_type_name(label)}")
            if LABEL_RE.fullmatch(label) is None:
                raise self.fail(f"{name}[{i}] {show(label)} is not a valid database label")
            if label in labels:
                raise self.fail(f"{name}[{i}] {show(label)} is given twice")
            labels.append(label)
        return tuple(labels)

    def image(self, value: object) -> str:
        image = self.str_field("image", value, max_len=MAX_IMAGE_CHARS)
        if not image:
            raise self.fail("image must not be empty")
        if not valid_image_reference(image):
            raise self.fail(f"image {show(image)} is not a valid image reference")
        return image

    def policy(self, image: str, databases: tuple[str, ...]) -> None:
        """The node's own rules, checked after the payload is known to be well-formed."""
        if self.config.images.digest == "required" and not has_digest(image):
            raise self.fail(f"image {show(image)} has no digest: this node runs only images given "
                            f"as name@sha256:<digest> (images.digest: required)",
                            TaskStatus.NOT_ALLOWED)
        if not image_allowed(image, self.config.images.allowed):
            raise self.fail(f"image {show(image)} is not on this node's allow-list", TaskStatus.NOT_ALLOWED)
        for label in databases:
            if self.config.database(label) is None:
                raise self.fail(f"database {show(label)} is not available on this node", TaskStatus.NOT_ALLOWED)

    def token(self, value: object) -> str:
        # The token itself never goes into a message.
        if not isinstance(value, str):
            raise self.fail(f"token must be a string, got {_type_name(value)}")
        if not value:
            raise self.fail("token must not be empty")
        if len(value.encode("utf-8")) > MAX_TOKEN_BYTES:
            raise self.fail(f"token is larger than {MAX_TOKEN_BYTES} bytes")
        if any(c in value for c in "\r\n\0"):
            raise self.fail("token must not contain line breaks or NUL characters")
        return value

    def deadline(self, value: object) -> int:
        limit = self.config.job.deadline_seconds
        if value is None:
            return limit
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"deadline_seconds must be an integer, got {_type_name(value)}")
        if value < 1:
            raise self.fail(f"deadline_seconds must be at least 1, got {value}")
        if value > limit:
            raise self.fail(f"deadline_seconds {value} is more than this node allows ({limit})",
                            TaskStatus.NOT_ALLOWED)
        return value

    def resources(self, value: object) -> Resources:
        """The container's resources: the node's defaults, raised to what the task asks.

        A task's cpu/memory is the container's limit (at most job.max_resources); the request
        stays the node's default unless that is above the new limit.
        """
        job = self.config.job
        requests = dict(job.resources.requests)
        limits = dict(job.resources.limits)
        if value is None:
            return Resources(requests, limits, 0)
        if not isinstance(value, dict):
            raise self.fail(f"resources must be an object, got {_type_name(value)}")
        unknown = sorted(set(value) - {"cpu", "memory", "gpu"}, key=str)
        if unknown:
            raise self.fail(f"resources has unknown fields {show(unknown)} (known: cpu, memory, gpu)")
        for name in ("cpu", "memory"):
            if name not in value:
                continue
            ask = value[name]
            try:
                amount = parse_quantity(ask)
            except ValueError:
                raise self.fail(f"resources.{name} {show(ask)} is not a Kubernetes quantity") from None
            cap = getattr(job.max_resources, name)
            if amount > parse_quantity(cap):
                raise self.fail(f"resources.{name} {show(ask)} is more than this node allows ({cap})",
                                TaskStatus.NOT_ALLOWED)
            if amount <= 0:
                raise self.fail(f"resources.{name} must be more than 0")
            limits[name] = str(ask)
            if name in requests and parse_quantity(requests[name]) > amount:
                requests[name] = str(ask)
        gpu = value.get("gpu", 0)
        if isinstance(gpu, bool) or not isinstance(gpu, int) or gpu < 0:
            raise self.fail(f"resources.gpu must be a non-negative integer, got {show(gpu)}")
        if gpu > job.max_resources.gpu:
            raise self.fail(f"resources.gpu {gpu} is more than this node allows ({job.max_resources.gpu})",
                            TaskStatus.NOT_ALLOWED)
        return Resources(requests, limits, gpu)


def image_allowed(image: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Whether an image reference matches one of the allow-list's fnmatch patterns.

    The full reference is compared (case-sensitive, ``*`` also crosses ``/``); a reference
    without a tag or digest is also compared as ``<image>:latest``, which is what it pulls.
    """
    candidates = [image]
    last = image.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        candidates.append(image + ":latest")
    return any(fnmatch.fnmatchcase(c, p) for p in patterns for c in candidates)


def refusal_reasons(raw: object, config: NodeConfig) -> list[str]:
    """Every reason the node refuses this payload (empty: it runs it). parse_command stops at
    the first; here the node's own rules (allow-list, each database, deadline, resources) are
    also checked one by one, so a data holder sees them all at once (`python -m node explain`)."""
    reasons: list[str] = []

    def add(message: str) -> None:
        if message not in reasons:
            reasons.append(message)
    try:
        parse_command(raw, config)
    except PayloadError as e:
        add(str(e))
    if not isinstance(raw, dict):
        return reasons
    c = _Checker(raw, config)
    run_id = raw.get("run_id")
    if not isinstance(run_id, bool) and isinstance(run_id, int) and 0 < run_id < MAX_ID:
        c.run_id = run_id
    for check in (lambda: c.policy(c.image(raw.get("image")), ()),
                  lambda: c.deadline(raw.get("deadline_seconds")),
                  lambda: c.resources(raw.get("resources"))):
        try:
            check()
        except PayloadError as e:
            add(str(e))
    labels = raw.get("databases", raw.get("databases_to_use"))
    for label in labels if isinstance(labels, list) else ():
        if isinstance(label, str) and config.database(label) is None:
            add(str(c.fail(f"database {show(label)} is not available on this node")))
    return reasons


def _payload_size(raw: dict) -> int:
    # strict UTF-8: a lone surrogate ("\ud800" in the JSON) raises here, so later encodes cannot fail
    return len(json.dumps(raw, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8"))


def parse_command(raw: object, config: NodeConfig) -> TaskCommand:
    """Validate a ``command`` payload (either shape of CONTRACTS §2); raises PayloadError only."""
    try:
        return _parse(raw, config)
    except PayloadError:
        raise
    except Exception as e:  # noqa: BLE001 - the node must never die on a payload
        raise PayloadError(f"payload could not be read: {type(e).__name__}") from e


def _parse(raw: object, config: NodeConfig) -> TaskCommand:
    if not isinstance(raw, dict):
        raise PayloadError(f"payload must be a JSON object, got {_type_name(raw)}")
    c = _Checker(raw, config)
    # Read the run id first, so every later refusal can be reported as that run's result.
    run_id = raw.get("run_id")
    if not isinstance(run_id, bool) and isinstance(run_id, int) and 0 < run_id < MAX_ID:
        c.run_id = run_id
    try:
        size = _payload_size(raw)
    except (TypeError, ValueError, RecursionError) as e:
        raise c.fail("payload is not plain JSON (binary data, NaN, invalid Unicode or too deeply nested)") from e
    if size > config.limits.max_payload_bytes:
        raise c.fail(f"payload is too large ({size} bytes, at most {config.limits.max_payload_bytes})")
    if not all(isinstance(k, str) for k in raw):
        raise c.fail("payload keys must be strings")
    keys = set(raw)
    if keys & _PROTOTYPE_ONLY and keys & _RICH_ONLY:
        raise c.fail(f"payload mixes prototype fields {show(sorted(keys & _PROTOTYPE_ONLY))} and rich "
                     f"fields {show(sorted(keys & _RICH_ONLY))}")
    shape = "prototype" if keys & _PROTOTYPE_ONLY else "rich"
    required = PROTOTYPE_FIELDS if shape == "prototype" else RICH_REQUIRED
    allowed = PROTOTYPE_FIELDS if shape == "prototype" else RICH_FIELDS
    missing = sorted(required - keys)
    if missing:
        raise c.fail(f"{shape} payload lacks required fields: {', '.join(missing)}")
    extra = sorted(keys - allowed)
    if extra:
        raise c.fail(f"{shape} payload has unknown fields: {show(extra, 120)}")
    run_id = c.id("run_id", raw["run_id"])
    c.run_id = run_id
    return _prototype(c, raw, run_id) if shape == "prototype" else _rich(c, raw, run_id)


def _prototype(c: _Checker, raw: dict, run_id: int) -> TaskCommand:
    task_info = raw["task_info"]
    if not isinstance(task_info, dict):
        raise c.fail(f"task_info must be an object, got {_type_name(task_info)}")
    args = tuple(c.argument(f"task_info[{show(k)}]", v) for k, v in task_info.items())
    docker_input = c.str_field("docker_input", raw["docker_input"])
    tmp = c.str_field("tmp_vol_name", raw["tmp_vol_name"], max_len=63)
    if DNS_LABEL_RE.fullmatch(tmp) is None:
        raise c.fail(f"tmp_vol_name {show(tmp)} is not a valid volume name (a DNS label)")
    token = c.token(raw["token"])
    databases = c.databases("databases_to_use", raw["databases_to_use"])
    image = c.image(raw["image"])
    c.policy(image, databases)
    return TaskCommand(run_id=run_id, task_id=run_id, parent_id=None, image=image, arguments=args,
                       input_bytes=docker_input.encode("utf-8"), databases=databases,
                       token=token, resources=c.resources(None), deadline_seconds=c.deadline(None),
                       shape="prototype")


def _rich(c: _Checker, raw: dict, run_id: int) -> TaskCommand:
    task_id = c.id("task_id", raw["task_id"])
    parent = raw.get("parent_id")
    parent_id = None if parent is None else c.id("parent_id", parent)
    arguments = raw.get("arguments", [])
    if arguments is None:
        arguments = []
    if not isinstance(arguments, list):
        raise c.fail(f"arguments must be a list of strings, got {_type_name(arguments)}")
    for i, a in enumerate(arguments):
        if not isinstance(a, str):
            raise c.fail(f"arguments[{i}] must be a string, got {_type_name(a)}")
        if "\0" in a:
            raise c.fail(f"arguments[{i}] contains a NUL character")
    input_bytes = json.dumps(raw.get("input"), ensure_ascii=False).encode("utf-8")
    token = c.token(raw["token"])
    databases = c.databases("databases", raw["databases"])
    image = c.image(raw["image"])
    c.policy(image, databases)
    resources = c.resources(raw.get("resources"))
    deadline = c.deadline(raw.get("deadline_seconds"))
    from node.companion import parse_service  # it builds on this module
    service = parse_service(c, raw.get("service"), deadline)
    return TaskCommand(run_id=run_id, task_id=task_id, parent_id=parent_id, image=image,
                       arguments=tuple(arguments), input_bytes=input_bytes, databases=databases, token=token,
                       resources=resources, deadline_seconds=deadline, shape="rich", service=service)
