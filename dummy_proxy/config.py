"""Typed proxy settings from ``proxy_config.yaml`` and/or the command line."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import yaml

from .errors import ConfigError


@dataclass(frozen=True)
class ProxyConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    upstream: str = "http://127.0.0.1:5000"     # scheme://host:port, no path
    max_body_bytes: int = 10 * 1024 * 1024
    connect_timeout_seconds: float = 5.0
    upstream_timeout_seconds: float = 60.0       # longest silence while reading from upstream
    max_request_seconds: float = 600.0           # longest whole exchange
    # Client side (dummy_proxy/guard.py): half-sent requests and idle connections are closed.
    header_timeout_seconds: float = 10.0         # first byte of a request head to its end
    idle_timeout_seconds: float = 60.0           # no request in progress
    body_timeout_seconds: float = 30.0           # longest silence while reading a request body
    max_connections: int = 256                   # more get 503 and are closed at once
    # The node this proxy serves: sent upstream as X-V6-Node-Key (CONTRACTS §4). Never shown.
    node_api_key: str | None = field(default=None, repr=False)


NODE_KEY_ENV = "V6_PROXY_NODE_API_KEY"


def node_api_key(raw: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    """The node's API key: from the file ``node_api_key_file`` names, else from env
    ``V6_PROXY_NODE_API_KEY`` (the file wins: it is what the deployment mounted on purpose,
    while an environment variable may be inherited). None: no identity configured."""
    path = raw.get("node_api_key_file")
    if path is not None:
        if not isinstance(path, str) or not path:
            raise ConfigError(f"node_api_key_file: expected a file path, got {path!r}")
        try:
            key = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeError) as e:
            raise ConfigError(f"node_api_key_file: cannot read {path}: "
                              f"{getattr(e, 'strerror', None) or type(e).__name__}") from e
        if not key:
            raise ConfigError(f"node_api_key_file: {path} is empty")
        return key
    key = env.get(NODE_KEY_ENV, "").strip()
    return key or None


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"listen: expected HOST:PORT, got {text!r}")
    return host, int(port)


def check_upstream(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"upstream: expected http(s)://host[:port], got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"upstream: give only scheme, host and port, got {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def _number(raw: dict, key: str, default: float, kind=float):
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{key}: expected a positive number, got {value!r}")
    return kind(value)


def load_config(path: Path | None, listen: str | None = None, upstream: str | None = None,
                max_body_bytes: int | None = None,
                env: Mapping[str, str] = os.environ) -> ProxyConfig:
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read proxy config {path}: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping")
    known = {"listen", "upstream", "max_body_bytes", "connect_timeout_seconds",
             "upstream_timeout_seconds", "max_request_seconds", "node_api_key_file",
             "header_timeout_seconds", "idle_timeout_seconds", "body_timeout_seconds",
             "max_connections"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
    if listen is not None:
        raw["listen"] = listen
    if upstream is not None:
        raw["upstream"] = upstream
    if max_body_bytes is not None:
        raw["max_body_bytes"] = max_body_bytes
    host, port = parse_listen(str(raw.get("listen", "127.0.0.1:8080")))
    return ProxyConfig(
        listen_host=host, listen_port=port,
        upstream=check_upstream(str(raw.get("upstream", "http://127.0.0.1:5000"))),
        max_body_bytes=_number(raw, "max_body_bytes", 10 * 1024 * 1024, int),
        connect_timeout_seconds=_number(raw, "connect_timeout_seconds", 5.0),
        upstream_timeout_seconds=_number(raw, "upstream_timeout_seconds", 60.0),
        max_request_seconds=_number(raw, "max_request_seconds", 600.0),
        header_timeout_seconds=_number(raw, "header_timeout_seconds", 10.0),
        idle_timeout_seconds=_number(raw, "idle_timeout_seconds", 60.0),
        body_timeout_seconds=_number(raw, "body_timeout_seconds", 30.0),
        max_connections=_number(raw, "max_connections", 256, int),
        node_api_key=node_api_key(raw, env),
    )
