"""Where the kubelet keeps container logs and how the API server reads them (pods/log).

Layout (as a real kubelet's /var/log/pods): ``<state dir>/pods/<namespace>_<pod>_<uid>/
<container>/<restartCount>.log``, each line in the CRI log format
``<RFC3339Nano> <stdout|stderr> <F|P> <text>``. The kubelet should take paths from
``log_path`` so both sides agree.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path


def log_dir(state_dir: Path, namespace: str, pod: str, uid: str, container: str) -> Path:
    return Path(state_dir) / "pods" / f"{namespace}_{pod}_{uid}" / container


def log_path(state_dir: Path, namespace: str, pod: str, uid: str, container: str,
             restart_count: int) -> Path:
    return log_dir(state_dir, namespace, pod, uid, container) / f"{restart_count}.log"


def _parse(line: bytes) -> tuple[str, bool, bytes] | None:
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3 or parts[2] not in (b"P", b"F"):
        return None
    return parts[0].decode(), parts[2] == b"P", parts[3] if len(parts) == 4 else b""


def _stamp_seconds(stamp: str) -> float:
    try:
        return datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(
            tzinfo=timezone.utc).timestamp()
    except ValueError:
        return 0.0


def render(raw: bytes, *, timestamps: bool = False, tail_lines: int | None = None,
           since_time: float | None = None, limit_bytes: int | None = None) -> bytes:
    """Turn CRI-format log content into what `kubectl logs` prints (partial lines joined)."""
    out: list[bytes] = []
    pending = b""
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # a line still being written
        parsed = _parse(line)
        if parsed is None:
            out.append(line)
            continue
        stamp, partial, text = parsed
        pending += text
        if partial:
            continue
        if since_time is None or _stamp_seconds(stamp) >= since_time:
            out.append((stamp.encode() + b" " if timestamps else b"") + pending + b"\n")
        pending = b""
    if tail_lines is not None:
        out = out[-tail_lines:] if tail_lines > 0 else []
    data = b"".join(out)
    if limit_bytes is not None:
        data = data[:limit_bytes]
    return data
