"""Typed settings of the dummy server, loaded once from ``server_config.yaml`` (and env)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError

NODE_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")
SECRET_ENV = "V6_SERVER_TOKEN_SECRET"


@dataclass(frozen=True)
class HeartbeatSettings:
    """How the server judges a node's liveness from its heartbeats (CONTRACTS §2)."""
    interval_seconds: float = 5.0   # the beat interval nodes are expected to keep
    suspect_after: int = 3          # missed intervals: alive -> suspected
    offline_after: int = 6          # missed intervals: -> offline

    def __post_init__(self) -> None:
        if not self.interval_seconds > 0:
            raise ConfigError(f"heartbeat.interval_seconds: must be positive, "
                              f"got {self.interval_seconds!r}")
        if not 1 <= self.suspect_after < self.offline_after:
            raise ConfigError(f"heartbeat: need 1 <= suspect_after < offline_after, got "
                              f"{self.suspect_after} and {self.offline_after}")


# A task's size, end to end: a node refuses a command larger than its limits.max_payload_bytes
# (node/config.py LimitsConfig, compact JSON), and the command is the task's spec plus an
# envelope the server adds (run_id, task_id, parent_id and the container token, < 400 bytes).
# The server accepts a spec of at most NODE_MAX_PAYLOAD_BYTES - COMMAND_ENVELOPE_BYTES, so a
# task it accepts is never one every node then refuses as too large (tests/server).
NODE_MAX_PAYLOAD_BYTES = 1_048_576
COMMAND_ENVELOPE_BYTES = 1024
MAX_TASK_SPEC_BYTES = NODE_MAX_PAYLOAD_BYTES - COMMAND_ENVELOPE_BYTES


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 5000
    database: Path = Path("v6-server.sqlite")
    token_secret: bytes = b""
    token_ttl_seconds: int = 3600
    max_body_bytes: int = 1_048_576
    # How long POST /api/task with a container token waits for a pending/initializing parent
    # run to become active: the algorithm may ask before the node's status change arrives.
    subtask_parent_wait_seconds: float = 10.0
    node_keys: Mapping[str, str] = field(default_factory=dict)        # api key -> node id
    researcher_keys: Mapping[str, str] = field(default_factory=dict)  # api key -> researcher name
    heartbeat: HeartbeatSettings = field(default_factory=HeartbeatSettings)

    @property
    def node_ids(self) -> list[str]:
        return sorted(set(self.node_keys.values()))

    def __repr__(self) -> str:  # keys and the secret must never reach a log line
        return (f"ServerConfig(host={self.host!r}, port={self.port}, database={str(self.database)!r}, "
                f"nodes={self.node_ids}, researchers={sorted(set(self.researcher_keys.values()))})")


def _pos_int(raw: Mapping[str, Any], key: str, default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}: expected a non-negative integer, got {value!r}")
    return value


def _heartbeat(raw: Mapping[str, Any]) -> HeartbeatSettings:
    section = raw.get("heartbeat") or {}
    if not isinstance(section, dict):
        raise ConfigError("heartbeat: expected a mapping of interval_seconds, suspect_after, "
                          "offline_after")
    d = HeartbeatSettings()
    unknown = sorted(set(section) - {"interval_seconds", "suspect_after", "offline_after"})
    if unknown:
        raise ConfigError(f"unknown heartbeat keys: {', '.join(map(str, unknown))}")
    interval = section.get("interval_seconds", d.interval_seconds)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)):
        raise ConfigError(f"heartbeat.interval_seconds: expected a number, got {interval!r}")
    counts = {}
    for key in ("suspect_after", "offline_after"):
        value = section.get(key, getattr(d, key))
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"heartbeat.{key}: expected an integer, got {value!r}")
        counts[key] = value
    return HeartbeatSettings(interval_seconds=float(interval), **counts)


def _keys(raw: Mapping[str, Any], section: str, name_key: str) -> dict[str, str]:
    entries = raw.get(section) or []
    if not isinstance(entries, list):
        raise ConfigError(f"{section}: expected a list of {{{name_key}, api_key}}")
    out: dict[str, str] = {}
    for i, entry in enumerate(entries):
        where = f"{section}[{i}]"
        if not isinstance(entry, dict) or set(entry) != {name_key, "api_key"}:
            raise ConfigError(f"{where}: expected exactly the keys {name_key!r} and 'api_key'")
        name, key = entry[name_key], entry["api_key"]
        if not isinstance(name, str) or (section == "nodes" and not NODE_ID_RE.match(name)):
            raise ConfigError(f"{where}.{name_key}: invalid value {name!r}")
        if not isinstance(key, str) or len(key) < 8:
            raise ConfigError(f"{where}.api_key: expected a string of at least 8 characters")
        if key in out:
            raise ConfigError(f"{where}.api_key: the same key is given twice")
        out[key] = name
    return out


def load_config(path: str | Path | None, env: Mapping[str, str] = os.environ) -> ServerConfig:
    """Read the YAML file; env ``V6_SERVER_TOKEN_SECRET`` overrides the token secret."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read server config {path}: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    known = {"host", "port", "database", "token_secret", "token_ttl_seconds", "max_body_bytes",
             "nodes", "researchers", "heartbeat", "subtask_parent_wait_seconds"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
    node_keys = _keys(raw, "nodes", "id")
    researcher_keys = _keys(raw, "researchers", "name")
    both = set(node_keys) & set(researcher_keys)
    if both:
        raise ConfigError("a key is used both by a node and by a researcher")
    secret = env.get(SECRET_ENV) or raw.get("token_secret") or ""
    if not isinstance(secret, str) or len(secret) < 16:
        raise ConfigError(f"token_secret (or env {SECRET_ENV}) must be a string of at least 16 characters")
    wait = raw.get("subtask_parent_wait_seconds", 10.0)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= 600:
        raise ConfigError(f"subtask_parent_wait_seconds: expected a number from 0 to 600, "
                          f"got {wait!r}")
    database = Path(str(raw.get("database", "v6-server.sqlite")))
    if path is not None and not database.is_absolute():
        database = Path(path).resolve().parent / database
    return ServerConfig(
        host=str(raw.get("host", "127.0.0.1")),
        port=_pos_int(raw, "port", 5000),
        database=database,
        token_secret=secret.encode(),
        token_ttl_seconds=_pos_int(raw, "token_ttl_seconds", 3600),
        max_body_bytes=_pos_int(raw, "max_body_bytes", 1_048_576),
        subtask_parent_wait_seconds=float(wait),
        node_keys=node_keys,
        researcher_keys=researcher_keys,
        heartbeat=_heartbeat(raw),
    )
