"""Typed view of the environment the node gives an algorithm container (CONTRACTS §5).

Every variable is optional at load time (prototype-style runs set few of them); code that needs one
asks with `require_*`, which raises EnvError naming the variable. Malformed values fail at load.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import EnvError

LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")
MAX_ID = 2**53

# The variables every algorithm run gets (database variables depend on DATABASE_LABELS).
EXPECTED_VARS = (
    "RUN_ID", "TASK_ID", "NODE_ID", "INPUT_FILE", "TOKEN_FILE", "OUTPUT_DIR", "OUTPUT_FILE",
    "TMP_DIR", "DATABASE_LABELS", "HOST", "PORT", "API_PATH",
)


def label_env_suffix(label: str) -> str:
    """`my-db` → `MY_DB`: how a database label appears in DATABASE_URI_<…>/DATABASE_TYPE_<…>."""
    return label.upper().replace("-", "_")


@dataclass(frozen=True)
class Database:
    label: str
    uri: str | None
    type: str | None


@dataclass(frozen=True)
class Proxy:
    host: str      # with scheme, e.g. "http://v6-proxy.v6-node.svc.cluster.local"
    port: int
    api_path: str  # e.g. "/api"

    @property
    def base_url(self) -> str:
        return f"{self.host}:{self.port}{self.api_path}"


@dataclass(frozen=True)
class AlgorithmEnv:
    run_id: int | None = None
    task_id: int | None = None
    node_id: str | None = None
    input_file: Path | None = None
    token_file: Path | None = None
    output_dir: Path | None = None
    output_file: Path | None = None
    tmp_dir: Path | None = None
    databases: tuple[Database, ...] = ()
    proxy: Proxy | None = None
    progress_file: Path | None = None
    image: str | None = None  # ALGORITHM_IMAGE: the image to use for subtasks, when set

    @property
    def database_labels(self) -> tuple[str, ...]:
        return tuple(db.label for db in self.databases)

    def database(self, label: str | None = None) -> Database:
        """The database with this label, or the first requested one when label is None."""
        if not self.databases:
            raise EnvError("no database was given to this task (DATABASE_LABELS is empty or unset)")
        if label is None:
            return self.databases[0]
        for db in self.databases:
            if db.label == label:
                return db
        raise EnvError(f"database {label!r} was not given to this task; "
                       f"available: {', '.join(self.database_labels)}")

    def require_path(self, name: str) -> Path:
        """The path field `name` (e.g. "output_file"), or EnvError naming its variable."""
        value = getattr(self, name)
        if value is None:
            raise EnvError(f"environment variable {name.upper()} is not set")
        return value

    def require_proxy(self) -> Proxy:
        if self.proxy is None:
            raise EnvError("the proxy address is not set (HOST and PORT environment variables)")
        return self.proxy


def _int_id(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise EnvError(f"{name} must be a positive integer, got {raw!r}") from None
    if not 0 < value < MAX_ID:
        raise EnvError(f"{name} must be a positive integer below 2**53, got {raw!r}")
    return value


def _path(environ: Mapping[str, str], name: str) -> Path | None:
    raw = environ.get(name)
    return Path(raw) if raw else None


def _databases(environ: Mapping[str, str]) -> tuple[Database, ...]:
    raw = environ.get("DATABASE_LABELS", "")
    labels = [part.strip() for part in raw.split(",") if part.strip()]
    seen = set()
    result = []
    for label in labels:
        if not LABEL_RE.match(label):
            raise EnvError(f"DATABASE_LABELS holds an invalid label {label!r}")
        if label in seen:
            raise EnvError(f"DATABASE_LABELS lists {label!r} twice")
        seen.add(label)
        suffix = label_env_suffix(label)
        result.append(Database(label=label,
                               uri=environ.get(f"DATABASE_URI_{suffix}") or None,
                               type=environ.get(f"DATABASE_TYPE_{suffix}") or None))
    return tuple(result)


def _proxy(environ: Mapping[str, str]) -> Proxy | None:
    host = environ.get("HOST", "").strip()
    raw_port = environ.get("PORT", "").strip()
    if not host or not raw_port:
        return None
    try:
        port = int(raw_port)
    except ValueError:
        raise EnvError(f"PORT must be a TCP port number, got {raw_port!r}") from None
    if not 0 < port < 65536:
        raise EnvError(f"PORT must be between 1 and 65535, got {raw_port!r}")
    if "://" not in host:
        host = "http://" + host
    host = host.rstrip("/")
    api_path = "/" + environ.get("API_PATH", "/api").strip().strip("/")
    return Proxy(host=host, port=port, api_path=api_path.rstrip("/") or "")


def load_env(environ: Mapping[str, str] | None = None) -> AlgorithmEnv:
    """Read the container env once; pass the result explicitly to the code that needs it."""
    environ = os.environ if environ is None else environ
    node_id = environ.get("NODE_ID") or None
    return AlgorithmEnv(
        run_id=_int_id(environ, "RUN_ID"),
        task_id=_int_id(environ, "TASK_ID"),
        node_id=node_id,
        input_file=_path(environ, "INPUT_FILE"),
        token_file=_path(environ, "TOKEN_FILE"),
        output_dir=_path(environ, "OUTPUT_DIR"),
        output_file=_path(environ, "OUTPUT_FILE"),
        tmp_dir=_path(environ, "TMP_DIR"),
        databases=_databases(environ),
        proxy=_proxy(environ),
        progress_file=_path(environ, "PROGRESS_FILE"),
        image=environ.get("ALGORITHM_IMAGE") or None,
    )


def missing_vars(environ: Mapping[str, str]) -> list[str]:
    """The expected variables (CONTRACTS §5) that are unset or empty, database ones included."""
    # A task may ask for no database: DATABASE_LABELS is then set but empty.
    missing = [name for name in EXPECTED_VARS
               if name not in environ or (not environ[name] and name != "DATABASE_LABELS")]
    for label in (p.strip() for p in environ.get("DATABASE_LABELS", "").split(",")):
        if label:
            suffix = label_env_suffix(label)
            missing += [name for name in (f"DATABASE_URI_{suffix}", f"DATABASE_TYPE_{suffix}")
                        if not environ.get(name)]
    return missing
