"""Container logs as the kubelet keeps them: ``<state>/pods/<ns>_<pod>_<uid>/<container>/
<restartCount>.log`` in the CRI log format (layout shared with the API server through
`localcluster.kubelet.podlogs`); they stay until the pod is deleted.

`read_log` is what the API server serves at ``pods/{name}/log``.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from localcluster.kubelet import podlogs
from localcluster.runtime.base import parse_log_line


class LogError(Exception):
    """The log cannot be served; ``code`` is the HTTP status (400 as the real API server)."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def pod_dir(state_dir: Path, pod: dict) -> Path:
    meta = pod["metadata"]
    return Path(state_dir) / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"


def log_file(state_dir: Path, pod: dict, container: str, restart_count: int) -> Path:
    meta = pod["metadata"]
    return podlogs.log_path(state_dir, meta["namespace"], meta["name"], meta["uid"], container,
                            restart_count)


def _container_names(pod: dict) -> list[str]:
    spec = pod.get("spec") or {}
    return [c["name"] for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
            + (spec.get("ephemeralContainers") or [])]


def _status_of(pod: dict, container: str) -> dict | None:
    status = pod.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(key) or []:
            if cs.get("name") == container:
                return cs
    return None


def resolve_log_path(state_dir: Path, pod: dict, container: str | None = None,
                     previous: bool = False) -> Path:
    """The log file to serve (for follow=true the API server may tail it); LogError if none."""
    name = pod["metadata"]["name"]
    main = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    if not container:
        if len(main) != 1:
            raise LogError(f"a container name must be specified for pod {name}, choose one of: "
                           f"[{' '.join(main)}]")
        container = main[0]
    if container not in _container_names(pod):
        raise LogError(f"container {container} is not valid for pod {name}")
    cs = _status_of(pod, container) or {}
    restarts = int(cs.get("restartCount", 0))
    if previous:
        path = log_file(state_dir, pod, container, restarts - 1)
        if restarts == 0 or not path.exists():
            raise LogError(f'previous terminated container "{container}" in pod "{name}" '
                           f"not found")
        return path
    path = log_file(state_dir, pod, container, restarts)
    if not path.exists():
        reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason", "ContainerCreating")
        raise LogError(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
    return path


def format_records(data: bytes, tail_lines: int | None = None, timestamps: bool = False,
                   since: dt.datetime | None = None, limit_bytes: int | None = None) -> str:
    """CRI log records → the text `kubectl logs` shows (partial records joined)."""
    lines: list[tuple[str, bytes]] = []
    pending = b""
    for raw in data.splitlines():
        rec = parse_log_line(raw)
        if rec is None:
            continue
        stamp, _stream, partial, text = rec
        if since is not None and _parse_stamp(stamp) < since:
            continue
        pending += text
        if partial:
            continue
        lines.append((stamp, pending))
        pending = b""
    if pending:
        lines.append(("", pending))
    if tail_lines is not None:
        lines = lines[-tail_lines:] if tail_lines > 0 else []
    out = b"".join((s.encode() + b" " if timestamps and s else b"") + t + b"\n" for s, t in lines)
    if limit_bytes is not None:
        out = out[:limit_bytes]
    return out.decode(errors="replace")


def _parse_stamp(stamp: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(stamp[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(
            tzinfo=dt.timezone.utc)
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def read_log(state_dir: Path, pod: dict, container: str | None = None, *,
             tail_lines: int | None = None, timestamps: bool = False, previous: bool = False,
             since_seconds: int | None = None, limit_bytes: int | None = None) -> str:
    """A container's log as ``GET pods/{name}/log`` answers it; LogError(message, 400) when the
    container has no log (waiting to start, unknown container, no previous instance)."""
    path = resolve_log_path(state_dir, pod, container, previous)
    since = None
    if since_seconds is not None:
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=since_seconds)
    return format_records(path.read_bytes(), tail_lines, timestamps, since, limit_bytes)
