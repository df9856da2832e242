"""results.json → the targets met or not, a markdown table and a PNG plot (pure but the plot)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def _get(d: Any, *path, default=None):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def _level(results: dict, n: int) -> dict | None:
    return _get(results, "scale", "levels", str(n))


def targets(results: dict) -> list[dict]:
    """Each target of issue 7: what was measured (median over repeats) and whether it is met."""
    lat = results.get("latency") or {}
    out = []

    def add(name: str, target: str, value, ok, unit: str = "") -> None:
        out.append({"name": name, "target": target, "measured": value, "unit": unit,
                    "met": None if value is None else bool(ok(value))})

    add("dispatch overhead p99 (watch)", "< 50 ms",
        _get(lat, "watch", "dispatch_ms", "p99", "median"), lambda v: v < 50, "ms")
    add("completion p99 (watch)", "< 250 ms",
        _get(lat, "watch", "completion_ms", "p99", "median"), lambda v: v < 250, "ms")
    add("completion p99: poll 1 s / watch", "≥ 4×",
        _get(lat, "completion_ratio_poll_over_watch", "p99", "median"), lambda v: v >= 4, "×")
    add("API requests per task (watch)", "≤ 8",
        _get(lat, "watch", "api_requests_per_task", "mean", "median"), lambda v: v <= 8)
    add("idle node API requests per 30 s (watch)", "≤ 1",
        _get(results, "idle", "watch", "requests_per_30s", "median"), lambda v: v <= 1)
    levels = sorted(int(n) for n in _get(results, "scale", "levels", default={}))
    top = levels[-1] if levels else None
    rss = _get(_level(results, top), "node_peak_rss_mb", "median") if top else None
    add(f"node peak RSS, {top} runs in flight", "< 150 MB", rss, lambda v: v < 150, "MB")
    flat = None
    if len(levels) >= 2:
        lo = _get(_level(results, levels[0]), "node_cpu_ms_per_task", "median")
        hi = _get(_level(results, top), "node_cpu_ms_per_task", "median")
        flat = hi / lo if lo and hi is not None else None
    add(f"node CPU per task, {top} vs {levels[0] if levels else '-'} in flight",
        "flat (≤ 1.5×)", flat, lambda v: v <= 1.5, "×")
    add("proxy overhead p50", "< 2 ms",
        _get(results, "proxy", "latency", "overhead_ms", "p50", "median"), lambda v: v < 2, "ms")
    add("proxy peak RSS while streaming", "< 60 MB",
        _get(results, "proxy", "stream", "proxy_peak_rss_mb", "median"), lambda v: v < 60, "MB")
    return out


def _fmt(s: dict | None, digits: int = 1) -> str:
    """'median (min–max)' of a spread."""
    if not s or s.get("median") is None:
        return "–"
    m, lo, hi = s["median"], s["min"], s["max"]
    if len(s.get("runs", [])) <= 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def markdown(results: dict) -> str:
    meta = results.get("meta", {})
    lines = [f"# Benchmark results ({meta.get('date', '?')}{', quick mode' if meta.get('quick') else ''})",
             "",
             f"Commit {meta.get('commit', '?')}, {meta.get('cpus', '?')} CPUs, Python "
             f"{meta.get('python', '?')}, {meta.get('repeats', '?')} repeats; load average at "
             f"start {meta.get('loadavg_start', '?')}. Figures: median over repeats "
             "(min–max of the repeats).", "", "## Targets", "",
             "| target | wanted | measured | met |", "|---|---|---|---|"]
    for t in results.get("targets", []):
        v = t["measured"]
        shown = "–" if v is None else f"{v:.2f} {t['unit']}".strip()
        met = "–" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['name']} | {t['target']} | {shown} | {met} |")
    lat = results.get("latency")
    if lat:
        lines += ["", "## Dispatch, completion and API cost per task (one task at a time)", "",
                  "| figure | watch p50 | watch p99 | poll 1 s p50 | poll 1 s p99 |",
                  "|---|---|---|---|---|"]
        rows = [("node overhead: accepted → Job created (ms)", "dispatch_ms"),
                ("task POSTed → Job created (ms)", "dispatch_end_to_end_ms"),
                ("completion: container exit → result at the researcher (ms)", "completion_ms"),
                ("… exit → node logs the final status (ms)", "completion_detect_ms"),
                ("… final status → result at the researcher (ms)", "completion_deliver_ms"),
                ("API requests per task", "api_requests_per_task")]
        for label, key in rows:
            cells = [_fmt(_get(lat, m, key, q)) for m in ("watch", "poll") for q in ("p50", "p99")]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        r = lat.get("completion_ratio_poll_over_watch", {})
        lines += ["", f"Completion, poll ÷ watch: p50 {_fmt(r.get('p50'))}×, "
                      f"p99 {_fmt(r.get('p99'))}×.", "",
                  "Requests per task by verb (last repeat): watch "
                  + ", ".join(f"{k} {v:.2f}" for k, v in
                              _get(lat, "watch", "api_requests_by_verb_per_task", default={}).items())
                  + "; poll "
                  + ", ".join(f"{k} {v:.2f}" for k, v in
                              _get(lat, "poll", "api_requests_by_verb_per_task", default={}).items())
                  + "."]
    idle = results.get("idle")
    if idle:
        lines += ["", "## Idle node", "", "| mode | API requests / min | per 30 s | node CPU s / min |",
                  "|---|---|---|---|"]
        for mode in ("watch", "poll"):
            m = idle.get(mode, {})
            lines.append(f"| {mode} | {_fmt(m.get('requests_per_minute'), 2)} | "
                         f"{_fmt(m.get('requests_per_30s'), 2)} | "
                         f"{_fmt(m.get('node_cpu_seconds_per_minute'), 3)} |")
        lines.append(f"\nWindow: {idle.get('window_seconds', 0):.0f} s per repeat; watch timeout "
                     f"{idle.get('watch_timeout_seconds')} s.")
    levels = _get(results, "scale", "levels", default={})
    if levels:
        lines += ["", "## Scale: runs in flight at once (watch mode)", "",
                  "| runs | node CPU ms / task | peak RSS (MB) | RSS idle (MB) | dispatch p50 / p99 (ms) "
                  "| completion p50 / p99 (ms) | API req. / task | to all in flight (s) | release → all results (s) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for n in sorted(levels, key=int):
            lv = levels[n]
            lines.append(
                f"| {n} | {_fmt(lv.get('node_cpu_ms_per_task'), 2)} | {_fmt(lv.get('node_peak_rss_mb'))} | "
                f"{_fmt(lv.get('node_rss_idle_mb'))} | "
                f"{_fmt(_get(lv, 'dispatch_ms', 'p50'), 0)} / {_fmt(_get(lv, 'dispatch_ms', 'p99'), 0)} | "
                f"{_fmt(_get(lv, 'completion_ms', 'p50'), 0)} / {_fmt(_get(lv, 'completion_ms', 'p99'), 0)} | "
                f"{_fmt(lv.get('api_requests_per_task'), 2)} | {_fmt(lv.get('seconds_to_all_in_flight'))} | "
                f"{_fmt(lv.get('seconds_release_to_all_results'))} |")
    proxy = results.get("proxy")
    if proxy:
        pl, ps = proxy.get("latency", {}), proxy.get("stream", {})
        lines += ["", "## Proxy", "", "| figure | p50 | p99 |", "|---|---|---|"]
        for label, key in (("direct (ms)", "direct_ms"), ("through the proxy (ms)", "proxy_ms"),
                           ("overhead, paired (ms)", "overhead_ms")):
            lines.append(f"| {label} | {_fmt(_get(pl, key, 'p50'), 3)} | {_fmt(_get(pl, key, 'p99'), 3)} |")
        size = proxy.get("stream_bytes", 0) / 1e9
        lines += ["", f"Streaming {size:.2f} GB: proxy peak RSS {_fmt(ps.get('proxy_peak_rss_mb'))} MB "
                      f"(before: {_fmt(ps.get('proxy_rss_before_mb'))} MB); throughput through the "
                      f"proxy {_fmt(ps.get('proxy_mb_per_s'), 0)} MB/s, direct "
                      f"{_fmt(ps.get('direct_mb_per_s'), 0)} MB/s."]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> bool:
    """The figures as one PNG; False when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False

    def bar(ax, labels, spreads, title, ylabel):
        meds = [(s or {}).get("median") or 0 for s in spreads]
        lo = [m - ((s or {}).get("min") or m) for m, s in zip(meds, spreads)]
        hi = [((s or {}).get("max") or m) - m for m, s in zip(meds, spreads)]
        ax.bar(range(len(meds)), meds, yerr=[lo, hi], capsize=4,
               color=["#3b7dd8", "#9cc0f0", "#d8733b", "#f0b99c"][:len(meds)])
        ax.set_xticks(range(len(meds)), labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=8)

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    lat = results.get("latency") or {}
    bar(axes[0][0], ["watch p50", "watch p99", "poll p50", "poll p99"],
        [_get(lat, m, "completion_ms", q) for m in ("watch", "poll") for q in ("p50", "p99")],
        "completion: container exit → result stored", "ms")
    bar(axes[0][1], ["watch p50", "watch p99", "poll p50", "poll p99"],
        [_get(lat, m, "dispatch_ms", q) for m in ("watch", "poll") for q in ("p50", "p99")],
        "node overhead per dispatch: accepted → Job created", "ms")
    idle = results.get("idle") or {}
    bar(axes[0][2], ["watch / task", "poll / task", "watch idle / min", "poll idle / min"],
        [_get(lat, "watch", "api_requests_per_task", "mean"),
         _get(lat, "poll", "api_requests_per_task", "mean"),
         _get(idle, "watch", "requests_per_minute"), _get(idle, "poll", "requests_per_minute")],
        "API requests (local cluster's counter)", "requests")
    levels = _get(results, "scale", "levels", default={})
    ns = sorted(levels, key=int)
    ax = axes[1][0]
    if ns:
        xs = [int(n) for n in ns]
        cpu = [_get(levels[n], "node_cpu_ms_per_task", "median") or 0 for n in ns]
        ax.plot(xs, cpu, "o-", label="node CPU ms / task")
        ax.set_xscale("log")
        ax.set_xlabel("runs in flight", fontsize=8)
        ax.set_ylabel("CPU ms per task", fontsize=8)
        ax.set_ylim(bottom=0)
        ax2 = ax.twinx()
        ax2.plot(xs, [_get(levels[n], "node_peak_rss_mb", "median") or 0 for n in ns], "s--",
                 color="#d8733b", label="peak RSS MB")
        ax2.set_ylabel("node peak RSS (MB)", fontsize=8)
        ax2.set_ylim(bottom=0)
        ax.legend(loc="upper left", fontsize=8)
        ax2.legend(loc="lower right", fontsize=8)
    ax.set_title("scale: node cost per task and memory", fontsize=10)
    ax = axes[1][1]
    if ns:
        for q, style in (("p50", "o-"), ("p99", "s--")):
            ax.plot(xs, [_get(levels[n], "dispatch_ms", q, "median") or 0 for n in ns], style,
                    label=f"dispatch {q}")
        ax.set_xscale("log")
        ax.set_xlabel("runs in flight", fontsize=8)
        ax.set_ylabel("ms", fontsize=8)
        ax.legend(fontsize=8)
    ax.set_title("scale: dispatch overhead", fontsize=10)
    pl = _get(results, "proxy", "latency", default={})
    bar(axes[1][2], ["direct p50", "direct p99", "proxy p50", "proxy p99"],
        [_get(pl, k, q) for k in ("direct_ms", "proxy_ms") for q in ("p50", "p99")],
        f"proxy: request latency (peak RSS streaming "
        f"{(_get(results, 'proxy', 'stream', 'proxy_peak_rss_mb', 'median') or 0):.0f} MB)", "ms")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
