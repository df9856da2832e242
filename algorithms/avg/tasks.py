"""The three methods of rich mode: `avg` (local mean), `partial` (sum and count) and `central`
(creates `partial` subtasks through the proxy and combines them)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from algorithms.common.client import COMPLETED, ServerClient
from algorithms.common.env import AlgorithmEnv
from algorithms.common.errors import DataError, EnvError, InputError, SubtaskError
from algorithms.common.progress import ProgressReporter

from . import stats

log = logging.getLogger(__name__)

METHODS = ("avg", "partial", "central")
DEFAULT_IMAGE = "v6-demo/avg"
DEFAULT_TIMEOUT = 600.0


@dataclass(frozen=True)
class AvgInput:
    method: str
    column: str
    database: str | None = None
    image: str | None = None
    nodes: list[str] | None = None
    timeout: float = DEFAULT_TIMEOUT


def parse_input(raw: Any) -> AvgInput:
    if not isinstance(raw, dict):
        raise InputError("the task input must be a JSON object like "
                         '{"method": "avg", "column": "Age"}')
    method = raw.get("method", "avg")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    column = raw.get("column")
    if not isinstance(column, str) or not column:
        raise InputError("the task input needs 'column': the name of a numeric CSV column")
    database = raw.get("database")
    if database is not None and (not isinstance(database, str) or not database):
        raise InputError("'database' must be a database label (a string)")
    image = raw.get("image")
    if image is not None and (not isinstance(image, str) or not image):
        raise InputError("'image' must be an image reference (a string)")
    nodes = raw.get("nodes")
    if nodes is not None and (not isinstance(nodes, list)
                              or not all(isinstance(n, str) and n for n in nodes)):
        raise InputError("'nodes' must be a list of node ids")
    timeout = raw.get("timeout", DEFAULT_TIMEOUT)
    if (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
            or not math.isfinite(timeout) or timeout <= 0):
        raise InputError("'timeout' must be a positive number of seconds")
    return AvgInput(method=method, column=column, database=database, image=image,
                    nodes=nodes, timeout=float(timeout))


def database_path(env: AlgorithmEnv, label: str | None) -> Path:
    try:
        db = env.database(label)
    except EnvError as e:
        raise InputError(str(e)) from e
    if db.uri is None:
        raise EnvError(f"database {db.label!r} has no DATABASE_URI_* variable")
    return Path(db.uri)


def run_avg(env: AlgorithmEnv, task: AvgInput) -> dict:
    values = stats.read_column(database_path(env, task.database), task.column)
    p = stats.partial(values)
    return {"mean": p.sum / p.count, "count": p.count}


def run_partial(env: AlgorithmEnv, task: AvgInput) -> dict:
    values = stats.read_column(database_path(env, task.database), task.column)
    return stats.partial(values).to_json()


def run_central(env: AlgorithmEnv, task: AvgInput, client: ServerClient,
                progress: ProgressReporter) -> dict:
    labels = [task.database] if task.database else list(env.database_labels[:1])
    if not labels:
        raise InputError("'central' needs a database label for the partial runs: give 'database' "
                         "in the input or request a database for this task")
    image = task.image or env.image or DEFAULT_IMAGE
    sub_input: dict[str, Any] = {"method": "partial", "column": task.column}
    if task.database:
        sub_input["database"] = task.database
    progress.report("creating partial subtasks", 0.0)
    created = client.create_subtask(image, sub_input, labels, nodes=task.nodes,
                                    name=f"avg partial of {task.column}")
    log.info("created subtask %s with %d run(s)", created["id"], len(created.get("runs", [])))
    progress.report(f"waiting for subtask {created['id']}", 0.1)
    runs = client.wait_for_results(created["id"], task.timeout)
    failed = [r for r in runs if r.get("status") != COMPLETED]
    if failed:
        raise SubtaskError("partial run(s) did not complete: " + "; ".join(
            f"run {r.get('id')} on node {r.get('node_id')}: {r.get('status')}"
            f"{_logs_excerpt(r)}" for r in failed))
    partials = [stats.parse_partial((r.get("result") or {}).get("data"),
                                    f"partial run {r.get('id')} on node {r.get('node_id')}")
                for r in runs]
    try:
        mean, count = stats.combine(partials)
    except DataError as e:
        raise DataError(f"subtask {created['id']}: {e}") from e
    progress.report("combined partial results", 1.0)
    return {"mean": mean, "count": count, "nodes": len(runs)}


def _logs_excerpt(run: dict, limit: int = 300) -> str:
    logs = (run.get("result") or {}).get("logs")
    if not isinstance(logs, str) or not logs.strip():
        return ""
    text = logs.strip().splitlines()[-1]
    return f" ({text[:limit]})"
