"""Pure validation of what researchers, containers and nodes send; errors name the bad field."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .config import MAX_TASK_SPEC_BYTES
from .errors import BadRequest
from .store import STATUSES

LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")
MAX_ID = 2 ** 53
MAX_IMAGE = 512
MAX_ARGS = 256
MAX_ARG_LEN = 4096
MAX_DATABASES = 64
MAX_NAME = 200
MAX_LEGACY_ID = 2 ** 52  # the upper half of the id space stays free for later tasks
MAX_DEPTH = 64  # nesting of lists/objects in a task's input or a relayed payload
# optional task fields that reach the node's command as given
COMMAND_KEYS = ("arguments", "resources", "deadline_seconds", "service")


class TooLarge(BadRequest):
    """A task larger than nodes accept once the server adds its envelope (config.py)."""

    status = 413


def spec_size(spec: dict) -> int:
    """Bytes of ``spec`` as the node measures a command (node/models.py _payload_size)."""
    return len(json.dumps(spec, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


@dataclass(frozen=True)
class TaskRequest:
    image: str
    input: Any
    arguments: list[str] | None
    databases: list[str]
    nodes: list[str] | None
    name: str | None
    resources: dict | None
    deadline_seconds: int | None
    service: dict | None = None  # a companion service, checked by the node (CONTRACTS §10)

    def spec(self) -> dict:
        spec = {"image": self.image, "input": self.input, "databases": self.databases}
        for key in COMMAND_KEYS:
            if getattr(self, key) is not None:
                spec[key] = getattr(self, key)
        return spec


def _depth(value: Any) -> int:
    """Nesting depth of lists and objects, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:  # no need to look further down
                stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict)
                                                      else item))
    return deepest


def check_plain_json(value: Any, what: str) -> None:
    """Refuse what JSON parsers accept but nothing downstream can store or relay: lone UTF-16
    surrogates ("\\ud800", unencodable in UTF-8: SQLite raised and the API answered 500), NaN and
    infinities, and nesting deeper than the recursion limit (found by tests/reliability)."""
    if _depth(value) > MAX_DEPTH:
        # python-socketio walks payloads recursively: a task nested ~900 deep was stored, then
        # relaying it raised RecursionError and the researcher never got an answer
        raise BadRequest(f"{what}: nested deeper than {MAX_DEPTH} levels")
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what}: contains invalid Unicode (a lone surrogate)") from None
    except ValueError:
        raise BadRequest(f"{what}: NaN and Infinity are not JSON numbers") from None
    except RecursionError:
        raise BadRequest(f"{what}: nested too deeply") from None
    except TypeError:
        # bytes (a Socket.IO binary attachment) or another non-JSON value, anywhere nested:
        # json.dumps raised TypeError and the handler died without an ack, so a node retried
        # the same result forever
        raise BadRequest(f"{what}: contains a value that is not JSON (binary data?)") from None


def is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < MAX_ID


def _str_list(body: dict, key: str, max_items: int, max_len: int) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > max_items:
        raise BadRequest(f"{key}: expected a list of at most {max_items} strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or len(item) > max_len:
            raise BadRequest(f"{key}[{i}]: expected a string of at most {max_len} characters")
    return value


def parse_task_request(body: Any, known_nodes: list[str]) -> TaskRequest:
    if not isinstance(body, dict):
        raise BadRequest("request body: expected a JSON object")
    check_plain_json(body, "request body")
    allowed = {"image", "input", "arguments", "databases", "nodes", "name", "resources",
               "deadline_seconds", "service"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown keys: {', '.join(unknown)}")
    image = body.get("image")
    if not isinstance(image, str) or not image.strip() or len(image) > MAX_IMAGE:
        raise BadRequest(f"image: expected a non-empty string of at most {MAX_IMAGE} characters")
    arguments = _str_list(body, "arguments", MAX_ARGS, MAX_ARG_LEN)
    databases = _str_list(body, "databases", MAX_DATABASES, 63) or []
    for i, label in enumerate(databases):
        if not LABEL_RE.match(label):
            raise BadRequest(f"databases[{i}]: {label!r} is not a valid database label")
    if len(set(databases)) != len(databases):
        raise BadRequest("databases: a label is given twice")
    nodes = _str_list(body, "nodes", 1000, 64)
    if nodes is not None:
        if not nodes:
            raise BadRequest("nodes: expected at least one node")
        if len(set(nodes)) != len(nodes):
            raise BadRequest("nodes: a node is given twice")
        unknown_nodes = [n for n in nodes if n not in known_nodes]
        if unknown_nodes:
            raise BadRequest(f"nodes: unknown node(s) {', '.join(unknown_nodes)}")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME):
        raise BadRequest(f"name: expected a string of at most {MAX_NAME} characters")
    resources = body.get("resources")
    if resources is not None:
        if not isinstance(resources, dict) or set(resources) - {"cpu", "memory", "gpu"}:
            raise BadRequest("resources: expected an object with keys among cpu, memory, gpu")
        for key in ("cpu", "memory"):
            if key in resources and not isinstance(resources[key], str):
                raise BadRequest(f"resources.{key}: expected a quantity string such as '500m'")
        if "gpu" in resources and not (isinstance(resources["gpu"], int)
                                       and not isinstance(resources["gpu"], bool)
                                       and resources["gpu"] >= 0):
            raise BadRequest("resources.gpu: expected a non-negative integer")
    deadline = body.get("deadline_seconds")
    if deadline is not None and not is_id(deadline):
        raise BadRequest("deadline_seconds: expected a positive integer")
    service = body.get("service")
    if service is not None and not isinstance(service, dict):
        # the node checks the rest, against its own policy (allowed images, databases)
        raise BadRequest("service: expected an object with at least 'image' and 'port'")
    request = TaskRequest(image=image, input=body.get("input"), arguments=arguments,
                          databases=databases, nodes=nodes, name=name, resources=resources,
                          deadline_seconds=deadline, service=service)
    size = spec_size(request.spec())
    if size > MAX_TASK_SPEC_BYTES:
        # measured as the node will: the raw body's size differs (whitespace, escapes, "1e5")
        raise TooLarge(f"task too large: {size} bytes as compact JSON, at most "
                       f"{MAX_TASK_SPEC_BYTES} (nodes accept {MAX_TASK_SPEC_BYTES} plus the "
                       f"server's envelope)")
    return request


def parse_legacy_request(payload: Any, known_nodes: list[str]) -> tuple[dict, list[str]]:
    """Split a researcher's ``command_request`` into (payload to relay, target nodes)."""
    if not isinstance(payload, dict):
        raise BadRequest("command_request: expected an object")
    check_plain_json(payload, "command_request")
    relay = {k: v for k, v in payload.items() if k != "target_nodes"}
    if not is_id(relay.get("run_id")):
        raise BadRequest("run_id: expected a positive integer below 2**53")
    if relay["run_id"] >= MAX_LEGACY_ID:
        # later rich ids continue above the largest legacy id: one at 2**53 - 1 pushed every
        # later task past the id limit, unreadable and refused by nodes (tests/reliability)
        raise BadRequest("run_id: a prototype task's run id must be below 2**52")
    if not isinstance(relay.get("image"), str) or not relay["image"].strip():
        raise BadRequest("image: expected a non-empty string")
    targets = payload.get("target_nodes")
    if targets is None:
        targets = list(known_nodes)
    if not isinstance(targets, list) or not targets or not all(isinstance(n, str) for n in targets):
        raise BadRequest("target_nodes: expected a non-empty list of node ids")
    unknown = [n for n in targets if n not in known_nodes]
    if unknown:
        raise BadRequest(f"target_nodes: unknown node(s) {', '.join(unknown)}")
    return relay, list(dict.fromkeys(targets))


def parse_status_change(data: Any) -> tuple[int, str, str | None]:
    if not isinstance(data, dict) or not is_id(data.get("run_id")):
        raise BadRequest("algorithm_status_change: expected an object with an integer run_id")
    status = data.get("status")
    if status not in STATUSES:
        raise BadRequest(f"algorithm_status_change: unknown status {status!r}")
    detail = data.get("detail")
    return data["run_id"], status, None if detail is None else str(detail)[:4000]


MAX_PROVENANCE_BYTES = 64 * 1024


def parse_provenance(value: Any) -> dict | None:
    """A result's provenance (CONTRACTS §2): an object of plain JSON, kept as the node sent it;
    absent (None) from nodes that do not send one."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest(f"run_result.provenance: expected an object, got {type(value).__name__}")
    check_plain_json(value, "run_result.provenance")
    if len(json.dumps(value)) > MAX_PROVENANCE_BYTES:
        raise BadRequest(f"run_result.provenance: larger than {MAX_PROVENANCE_BYTES} bytes")
    return value


def parse_result(data: Any) -> tuple[int, str, Any, Any, dict | None]:
    if not isinstance(data, dict) or not is_id(data.get("run_id")):
        raise BadRequest("run_result: expected an object with an integer run_id")
    status = data.get("status")
    if status not in STATUSES:
        raise BadRequest(f"run_result: unknown status {status!r}")
    # checked before anything is stored: bytes in data made the store raise (CONTRACTS §2)
    check_plain_json(data.get("data"), "run_result.data")
    check_plain_json(data.get("logs"), "run_result.logs")
    return (data["run_id"], status, data.get("data"), data.get("logs"),
            parse_provenance(data.get("provenance")))
