"""RFC 3339 timestamps as the API server writes them (seconds, UTC, ``Z``)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone


def now_rfc3339(delta_seconds: float = 0) -> str:
    t = datetime.now(timezone.utc) + timedelta(seconds=delta_seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")
