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
    table = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
    blocks = [render_provenance(run["id"], run["result"]["provenance"])
              for task in tasks for run in task["runs"]
              if isinstance(run.get("result"), dict) and isinstance(run["result"].get("provenance"), dict)]
    return "\n\n".join([table, *blocks])


def _usage(usage: dict) -> str:
    if not usage.get("available"):
        return f"not available ({usage.get('reason', 'not given')})"
    peak = usage.get("memory_peak_bytes")
    memory = "peak memory not available" if peak is None else f"peak memory {peak / 2**20:.1f} MiB"
    return f"{usage.get('cpu_seconds', 0):.3f} CPU-seconds, {memory} ({usage.get('scope', '?')} cgroup)"


def render_provenance(run_id: int, p: dict) -> str:
    """What ran for one run, and under which isolation (CONTRACTS §2 provenance)."""
    isolation = p.get("isolation") or {}
    outcome = str(isolation.get("outcome", "not given"))
    checks = ", ".join(f"{c.get('name')}: ok" if c.get("ok") else
                       f"{c.get('name')}: FAILED ({c.get('detail') or 'no detail'})"
                       for c in isolation.get("checks") or [])
    policies = p.get("network_policies") or []
    lines = [
        f"run {run_id} provenance (node {p.get('node_id')} {p.get('node_version')}):",
        f"  image          {p.get('image')}",
        f"  image digest   {p.get('image_digest') or 'not available'}"
        + (f" (pinned to {p['pin']})" if p.get("pin") else ""),
        f"  job spec       sha256:{p['job_spec_sha256']}" if p.get("job_spec_sha256")
        else "  job spec       not available",
        "  policies       " + (f"sha256:{p['network_policies_sha256']} ("
                               + ", ".join(r.get("name", "?") for r in policies) + ")"
                               if p.get("network_policies_sha256") else "none known"),
        f"  isolation      {outcome.upper() if outcome == 'failed' else outcome}"
        + (f": {checks}" if checks else (f" ({isolation['detail']})" if isolation.get("detail") else "")),
        f"  ran            {p.get('started_at') or '?'} .. {p.get('finished_at') or '?'}, "
        f"exit code {p.get('exit_code') if p.get('exit_code') is not None else 'not available'}",
        f"  resources      {_usage(p.get('usage') or {})}",
    ]
    return "\n".join(lines)


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
