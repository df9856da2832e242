"""HTTP client for the server API (CONTRACTS §3), reached through the node's proxy with the
container token. Standard library only (urllib) so algorithm images stay dependency-free."""
from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .env import AlgorithmEnv
from .errors import EnvError, ServerError, SubtaskError

log = logging.getLogger(__name__)

# Runs in these states may still change; anything else is final (vantage6 TaskStatus values).
ACTIVE_STATUSES = frozenset({"pending", "initializing", "active"})
COMPLETED = "completed"
# Worth retrying while polling: the proxy or server may restart or shed load.
TRANSIENT_HTTP = frozenset({429, 500, 502, 503, 504})


def read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise EnvError(f"cannot read the container token from {path}: {e}") from e
    if not token:
        raise EnvError(f"the container token file {path} is empty")
    return token


class ServerClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self._clock = clock
        self._sleep = sleep
        # The node's proxy is the server's address here, not a forward proxy: ignore any
        # HTTP(S)_PROXY in the environment so requests go straight to it.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @classmethod
    def from_env(cls, env: AlgorithmEnv, **kwargs: Any) -> "ServerClient":
        proxy = env.require_proxy()
        return cls(proxy.base_url, read_token(env.require_path("token_file")), **kwargs)

    def __repr__(self) -> str:  # never show the token
        return f"ServerClient({self.base_url!r})"

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One API call; returns the decoded JSON body. Raises ServerError (with .status)."""
        url = self.base_url + path
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self._token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise ServerError(f"{method} {path} failed: HTTP {e.code}: {_error_text(e)}",
                              status=e.code, transient=e.code in TRANSIENT_HTTP) from e
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ServerError(f"{method} {path} failed: cannot reach {self.base_url}: {reason}",
                              transient=True) from e
        try:
            return json.loads(raw) if raw else None
        except json.JSONDecodeError as e:
            raise ServerError(f"{method} {path}: the answer is not JSON") from e

    def version(self) -> str:
        body = self.request("GET", "/version")
        if not isinstance(body, dict) or not isinstance(body.get("version"), str):
            raise ServerError(f"GET /version: unexpected answer {body!r:.200}")
        return body["version"]

    def create_subtask(self, image: str, input: Any, databases: list[str], *,
                       nodes: list[str] | None = None, arguments: list[str] | None = None,
                       name: str | None = None) -> dict:
        """POST /task with the container token: a subtask of this run's task. Returns
        `{"id", "runs": [{"id", "node_id"}]}`; nodes default (server side) to the parent's."""
        body: dict[str, Any] = {"image": image, "input": input, "databases": list(databases)}
        if nodes is not None:
            body["nodes"] = list(nodes)
        if arguments is not None:
            body["arguments"] = list(arguments)
        if name is not None:
            body["name"] = name
        created = self.request("POST", "/task", body)
        if not isinstance(created, dict) or not isinstance(created.get("id"), int):
            raise ServerError(f"POST /task: unexpected answer {created!r:.200}")
        return created

    def get_task(self, task_id: int) -> dict:
        return self.request("GET", f"/task/{int(task_id)}")

    def get_run(self, run_id: int) -> dict:
        return self.request("GET", f"/run/{int(run_id)}")

    def wait_for_results(self, task_id: int, timeout: float, *, first_interval: float = 0.1,
                         max_interval: float = 2.0, backoff: float = 1.5) -> list[dict]:
        """Poll the task until every run is finished; return its runs, each with `result`.

        A completed run counts as finished once its result is in (the status change may arrive
        before the result); any other final status counts at once. Polling backs off from
        `first_interval` to `max_interval`; transient errors (unreachable, 429, 5xx) are retried
        until the deadline. Raises SubtaskError on timeout.
        """
        deadline = self._clock() + timeout
        interval = first_interval
        last: list[dict] = []
        last_error: ServerError | None = None
        while True:
            try:
                last = self._runs_with_results(task_id)
                last_error = None
                if last and all(_finished(run) for run in last):
                    return last
            except ServerError as e:
                if not e.transient:
                    raise
                last_error = e
                log.warning("polling task %s: %s (will retry)", task_id, e)
            remaining = deadline - self._clock()
            if remaining <= 0:
                states = ", ".join(f"run {r.get('id')} on {r.get('node_id')}: {r.get('status')}"
                                   for r in last) or "no runs seen"
                why = f"; last error: {last_error}" if last_error else ""
                raise SubtaskError(f"task {task_id} did not finish within {timeout:g}s "
                                   f"({states}){why}")
            self._sleep(min(interval, remaining))
            interval = min(max_interval, interval * backoff)

    def _runs_with_results(self, task_id: int) -> list[dict]:
        task = self.get_task(task_id)
        runs = task.get("runs") if isinstance(task, dict) else None
        if not isinstance(runs, list):
            raise ServerError(f"GET /task/{task_id}: answer has no list of runs")
        result = []
        for run in runs:
            if not isinstance(run, dict) or not isinstance(run.get("id"), int):
                raise ServerError(f"GET /task/{task_id}: malformed run {run!r:.200}")
            # The task view may list runs without their results; the run view has them.
            if _needs_detail(run):
                run = self.get_run(run["id"])
            result.append(run)
        return result


def _needs_detail(run: dict) -> bool:
    """A finished run listed without its result (data, logs): ask the run view for it."""
    status = run.get("status")
    return status is None or (status not in ACTIVE_STATUSES and run.get("result") is None)


def _finished(run: dict) -> bool:
    status = run.get("status")
    if status in ACTIVE_STATUSES or status is None:
        return False
    return status != COMPLETED or run.get("result") is not None


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(e.read() or b"null")
    except (json.JSONDecodeError, OSError):
        return e.reason if isinstance(e.reason, str) else "error"
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return str(e.reason)
