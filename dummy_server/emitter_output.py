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


def render_explanations(answers: dict[str, dict]) -> str:
    """Each node's answer to a dry run (explain): verdict, reasons, dry runs, manifests."""
    import yaml  # only here: the rest of the emitter needs no YAML
    out = []
    for node_id, a in answers.items():
        if not a.get("ok"):
            out.append(f"node {node_id}: no answer: {a.get('error')}")
            continue
        out.append(f"node {node_id}: {a.get('verdict')}")
        out += [f"  - {r}" for r in a.get("reasons") or []]
        for d in a.get("dry_runs") or []:
            out.append(f"  server dry run, {d.get('object')}: {d.get('outcome')}")
            out += [f"    warning: {w}" for w in d.get("warnings") or []]
        for m in a.get("manifests") or []:
            out.append(f"--- # {m.get('kind')} node {node_id} would create")
            out.append(yaml.safe_dump(m, sort_keys=False).rstrip())
    return "\n".join(out)
