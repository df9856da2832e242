"""Frames of the live channel (docs/CONTRACTS.md §9): ``[run_id, type, json]``, pure helpers.

Shared by the sidecar (``node/sidecar.py``) and the node (``node/live.py``) so both ends agree on
the format and on the size bounds. Nothing here does I/O.
"""
from __future__ import annotations

import json
from typing import Any

# Sidecar PUB events, node PUB events, and the REQ/REP pair.
PROGRESS = "progress"
LOG = "log"
HEARTBEAT = "heartbeat"
PING = "ping"
PONG = "pong"
ERROR = "error"
FACTS = "facts"  # the sidecar's isolation probe outcome and the pod's resource use
# node PUB only
HEALTH = "health"
STATE = "state"
SNAPSHOT = "snapshot"
NODE_TOPIC = ""  # run_id frame of node-wide events (snapshot)

# Bounds: one frame's JSON part; one progress line read from the file; message texts.
MAX_BODY_BYTES = 64 * 1024
MAX_LINE_BYTES = 4096
MAX_MESSAGE_CHARS = 500
MAX_REPLAY = 50          # progress events a pong carries at most
MAX_FRAME_BYTES = MAX_BODY_BYTES + 64  # for ZMQ_MAXMSGSIZE on receiving sockets
MAX_CHECKS = 32          # isolation checks a facts body carries at most
MAX_FACT_CHARS = 200     # names, details and reasons in a facts body
OUTCOMES = ("passed", "failed", "not run", "unfinished")


class FrameError(ValueError):
    """A frame that is not ``[run_id, type, json-object]`` within the bounds."""


def encode(run_id: str, kind: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    if len(data) > MAX_BODY_BYTES:
        raise FrameError(f"{kind} frame body of {len(data)} bytes exceeds {MAX_BODY_BYTES}")
    return [run_id.encode(), kind.encode(), data]


def decode(frames: list[bytes]) -> tuple[str, str, dict[str, Any]]:
    if len(frames) != 3:
        raise FrameError(f"expected 3 frames, got {len(frames)}")
    topic, kind, data = frames
    if len(topic) > 32 or len(kind) > 32 or len(data) > MAX_BODY_BYTES:
        raise FrameError("frame too large")
    try:
        body = json.loads(data)
        run_id, kind_text = topic.decode("ascii"), kind.decode("ascii")
    except (UnicodeDecodeError, ValueError) as e:
        raise FrameError(f"undecodable frame: {e}") from e
    if not isinstance(body, dict):
        raise FrameError("frame body is not a JSON object")
    return run_id, kind_text, body


def parse_progress_line(line: bytes) -> dict[str, Any] | None:
    """One line of the algorithm's progress file as a progress event body (without ``seq``),
    or None for a line that is not a progress report (ignored, never fatal)."""
    if len(line) > MAX_LINE_BYTES:
        return None
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    fraction = raw.get("progress")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, type(None))):
        fraction = None
    elif fraction is not None:
        fraction = min(1.0, max(0.0, float(fraction))) if fraction == fraction else None
    message = raw.get("message")
    message = message[:MAX_MESSAGE_CHARS] if isinstance(message, str) else ""
    at = raw.get("time")
    at = float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None
    return {"progress": fraction, "message": message, "time": at}


def progress_event(body: dict[str, Any]) -> dict[str, Any] | None:
    """A received progress event, checked; None when malformed."""
    seq = body.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return None
    fraction = body.get("progress")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, type(None))):
        return None
    message = body.get("message")
    if not isinstance(message, str):
        return None
    at = body.get("time")
    if isinstance(at, bool) or not isinstance(at, (int, float, type(None))):
        at = None
    return {"seq": seq, "progress": fraction, "message": message[:MAX_MESSAGE_CHARS], "time": at}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        and value >= 0


def _text(value: Any) -> str | None:
    return value[:MAX_FACT_CHARS] if isinstance(value, str) else None


def _isolation(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict) or raw.get("outcome") not in OUTCOMES:
        return None
    checks = raw.get("checks", [])
    if not isinstance(checks, list) or len(checks) > MAX_CHECKS:
        return None
    out_checks = []
    for c in checks:
        if not isinstance(c, dict) or not isinstance(c.get("ok"), bool):
            return None
        name, detail = _text(c.get("name")), _text(c.get("detail", ""))
        if name is None or detail is None:
            return None
        out_checks.append({"name": name, "ok": c["ok"], "detail": detail})
    out: dict[str, Any] = {"outcome": raw["outcome"], "checks": out_checks}
    if _number(raw.get("seconds")):
        out["seconds"] = raw["seconds"]
    if (detail := _text(raw.get("detail"))) is not None:
        out["detail"] = detail
    return out


def _usage(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("available"), bool):
        return None
    if not raw["available"]:
        reason = _text(raw.get("reason", ""))
        return None if reason is None else {"available": False, "reason": reason}
    cpu, peak = raw.get("cpu_seconds"), raw.get("memory_peak_bytes")
    if raw.get("scope") != "pod" or not _number(cpu):
        return None
    if peak is not None and (not isinstance(peak, int) or isinstance(peak, bool) or peak < 0):
        return None
    return {"available": True, "scope": "pod", "cpu_seconds": cpu, "memory_peak_bytes": peak}


def facts_body(body: Any) -> dict[str, Any] | None:
    """A received facts body (a ``facts`` frame, or a pong's ``facts``), checked and cut down to
    the known keys; ``{}`` when it holds none yet; None when malformed."""
    if not isinstance(body, dict):
        return None
    out: dict[str, Any] = {}
    for key, check in (("isolation", _isolation), ("usage", _usage)):
        if key in body:
            value = check(body[key])
            if value is None:
                return None
            out[key] = value
    return out
