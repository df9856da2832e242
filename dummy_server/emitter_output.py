"""Rendering of task views for the command emitter: JSON or a plain text table."""
from __future__ import annotations

import json

from .emitter_client import TERMINAL


def exit_code(tasks: list[dict]) -> int:
    """0 when every run completed, 1 when any run failed or is unfinished."""
    runs = [r for t in tasks for r in t["runs"]]
    return 0 if runs and all(r["status"] == "completed" for r in runs) else 1


def _cell(value, width: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render(tasks: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"tasks": tasks}, indent=2)
    rows = [("TASK", "RUN", "NODE", "STATUS", "DATA")]
    for task in tasks:
        for run in task["runs"]:
            result = run["result"]
            data = "" if result is None else _cell(result.get("data"), 60)
            status = run["status"] if run["status"] in TERMINAL or result else run["status"] + "…"
            rows.append((str(task["id"]), str(run["id"]), run["node_id"], status, data))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
