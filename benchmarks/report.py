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


CONFIG_LABELS = {"watch": "watch (defaults: live on)", "watch-nolive": "watch, live off",
                 "poll": "poll 1 s (live on)"}


def _level(results: dict, config: str, n: int | str) -> dict | None:
    return _get(results, "scale", "levels", config, str(n))


def _levels(results: dict, config: str = "watch") -> list[int]:
    return sorted(int(n) for n in _get(results, "scale", "levels", config, default={}))


def poll_ratios(results: dict) -> dict[int, float]:
    """Per level: completion p99 polling ÷ watching (live on both), median over repeats."""
    out = {}
    for n in _levels(results, "watch"):
        w = _get(_level(results, "watch", n), "completion_ms", "p99", "median")
        p = _get(_level(results, "poll", n), "completion_ms", "p99", "median")
        if w and p is not None:
            out[n] = p / w
    return out


def targets(results: dict) -> list[dict]:
    """Each target (issues 7 and 15): what was measured (median over repeats) and if it is met.
    Measured on the node's defaults (the `watch` stack: live channel on)."""
    lat = results.get("latency") or {}
    out = []

    def add(name: str, target: str, value, ok, unit: str = "") -> None:
        out.append({"name": name, "target": target, "measured": value, "unit": unit,
                    "met": None if value is None else bool(ok(value))})

    add("dispatch overhead p99", "< 50 ms",
        _get(lat, "watch", "dispatch_ms", "p99", "median"), lambda v: v < 50, "ms")
    add("completion p99, one task at a time", "< 250 ms",
        _get(lat, "watch", "completion_ms", "p99", "median"), lambda v: v < 250, "ms")
    add("completion p99 one at a time: poll 1 s / watch", "≥ 4×",
        _get(lat, "completion_ratio_poll_over_watch", "p99", "median"), lambda v: v >= 4, "×")
    add("API requests per task", "≤ 8",
        _get(lat, "watch", "api_requests_per_task", "mean", "median"), lambda v: v <= 8)
    add("idle node API requests per 30 s", "≤ 1",
        _get(results, "idle", "watch", "requests_per_30s", "median"), lambda v: v <= 1)
    levels = _levels(results)
    big = 1000 if 1000 in levels else (levels[-1] if levels else None)
    top = _level(results, "watch", big) if big else None
    add(f"{big} runs released at once → all results", "< 5 s",
        _get(top, "seconds_release_to_all_results", "median"), lambda v: v < 5, "s")
    add(f"completion p99, {big} in flight", "< 2 s",
        _get(top, "completion_ms", "p99", "median"), lambda v: v < 2000, "ms")
    flat = None
    if len(levels) >= 2 and big:
        lo = _get(_level(results, "watch", levels[0]), "node_cpu_ms_per_task", "median")
        hi = _get(top, "node_cpu_ms_per_task", "median")
        flat = hi / lo if lo and hi is not None else None
    add(f"node CPU per run, {big} vs {levels[0] if levels else '-'} in flight", "≤ 1.5×", flat,
        lambda v: v <= 1.5, "×")
    add(f"node peak RSS, {big} in flight, live on", "< 200 MB",
        _get(top, "node_peak_rss_mb", "median"), lambda v: v < 200, "MB")
    ratios = poll_ratios(results)
    add("completion p99 at every scale: poll 1 s / watch (the lowest)", "≥ 10×",
        min(ratios.values()) if ratios else None, lambda v: v >= 10, "×")
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


def _cfgs(d: dict) -> list[str]:
    return [c for c in CONFIG_LABELS if c in d]


def markdown(results: dict) -> str:
    meta = results.get("meta", {})
    lines = [f"# Benchmark results ({meta.get('date', '?')}{', quick mode' if meta.get('quick') else ''})",
             "",
             f"Commit {meta.get('commit', '?')}, {meta.get('cpus', '?')} CPUs, Python "
             f"{meta.get('python', '?')}, {meta.get('repeats', '?')} repeats; load average at "
             f"start {meta.get('loadavg_start', '?')}. Figures: median over repeats "
             "(min–max of the repeats). `watch` is the node's default configuration (live "
             "channel on); `watch, live off` differs only in `live.enabled: false`; `poll 1 s` "
             "is the vantage6-style baseline.", "", "## Targets", "",
             "| target | wanted | measured | met |", "|---|---|---|---|"]
    for t in results.get("targets", []):
        v = t["measured"]
        shown = "–" if v is None else f"{v:.2f} {t['unit']}".strip()
        met = "–" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['name']} | {t['target']} | {shown} | {met} |")
    lat = results.get("latency")
    if lat:
        cfgs = _cfgs(lat)
        lines += ["", "## Dispatch, completion and API cost per task (one task at a time)", "",
                  "| figure | " + " | ".join(f"{CONFIG_LABELS[c]} p50 | p99" for c in cfgs) + " |",
                  "|---|" + "---|---|" * len(cfgs)]
        rows = [("node overhead: accepted → Job created (ms)", "dispatch_ms"),
                ("task POSTed → Job created (ms)", "dispatch_end_to_end_ms"),
                ("completion: container exit → result at the researcher (ms)", "completion_ms"),
                ("… exit → node logs the final status (ms)", "completion_detect_ms"),
                ("… final status → result at the researcher (ms)", "completion_deliver_ms"),
                ("API requests per task", "api_requests_per_task")]
        for label, key in rows:
            cells = [_fmt(_get(lat, m, key, q)) for m in cfgs for q in ("p50", "p99")]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        r = lat.get("completion_ratio_poll_over_watch", {})
        lines += ["", f"Completion, poll ÷ watch: p50 {_fmt(r.get('p50'))}×, "
                      f"p99 {_fmt(r.get('p99'))}×.", ""]
        for c in cfgs:
            lines.append(f"Requests per task by verb (last repeat), {CONFIG_LABELS[c]}: " + ", ".join(
                f"{k} {v:.2f}" for k, v in
                _get(lat, c, "api_requests_by_verb_per_task", default={}).items()) + ".")
    lines += _live_section(results)
    lines += _scale_section(results)
    idle = results.get("idle")
    if idle:
        lines += ["", "## Idle node", "", "| stack | API requests / min | per 30 s | node CPU s / min |",
                  "|---|---|---|---|"]
        for c in _cfgs(idle):
            m = idle.get(c, {})
            lines.append(f"| {CONFIG_LABELS[c]} | {_fmt(m.get('requests_per_minute'), 2)} | "
                         f"{_fmt(m.get('requests_per_30s'), 2)} | "
                         f"{_fmt(m.get('node_cpu_seconds_per_minute'), 3)} |")
        lines.append(f"\nWindow: {idle.get('window_seconds', 0):.0f} s per repeat; watch timeout "
                     f"{idle.get('watch_timeout_seconds')} s.")
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


def _diff(a: dict | None, b: dict | None, key: str) -> str:
    x, y = _get(a, key, "median"), _get(b, key, "median")
    return "–" if x is None or y is None else f"{x - y:+.1f}"


def _live_section(results: dict) -> list[str]:
    prog = results.get("progress")
    levels = _levels(results, "watch")
    if not prog and not levels:
        return []
    out = ["", "## The live channel's own cost", ""]
    if prog:
        out += [f"Progress line written by the algorithm → `task_progress` at the researcher "
                f"(real pods, one task at a time): p50 {_fmt(_get(prog, 'latency_ms', 'p50'))} ms, "
                f"p99 {_fmt(_get(prog, 'latency_ms', 'p99'))} ms; {prog.get('lines_received')} of "
                f"{prog.get('lines_written')} lines arrived.", ""]
    both = [n for n in levels if _level(results, "watch-nolive", n)]
    if both:
        out += ["| runs in flight | node CPU ms / run: on, off (diff) | peak RSS MB: on, off (diff) "
                "| fds in flight: on, off | sockets in flight: on, off |", "|---|---|---|---|---|"]
        for n in both:
            on, off = _level(results, "watch", n), _level(results, "watch-nolive", n)
            out.append(
                f"| {n} | {_fmt(on.get('node_cpu_ms_per_task'))}, {_fmt(off.get('node_cpu_ms_per_task'))} "
                f"({_diff(on, off, 'node_cpu_ms_per_task')}) | {_fmt(on.get('node_peak_rss_mb'))}, "
                f"{_fmt(off.get('node_peak_rss_mb'))} ({_diff(on, off, 'node_peak_rss_mb')}) | "
                f"{_fmt(on.get('node_fds_in_flight'), 0)}, {_fmt(off.get('node_fds_in_flight'), 0)} | "
                f"{_fmt(on.get('node_sockets_in_flight'), 0)}, {_fmt(off.get('node_sockets_in_flight'), 0)} |")
    return out


def _scale_section(results: dict) -> list[str]:
    by_cfg = _get(results, "scale", "levels", default={})
    if not by_cfg:
        return []
    out = ["", "## Scale: runs in flight at once, released together", "",
           "| runs | stack | dispatch p50 / p99 (ms) | completion p50 / p99 (ms) | release → all "
           "results (s) | node CPU ms / run | peak RSS (MB) | fds / sockets peak | API req. / run "
           "| to all in flight (s) | cluster CPU (s) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    ns = sorted({int(n) for lv in by_cfg.values() for n in lv})
    for n in ns:
        for c in _cfgs(by_cfg):
            lv = _level(results, c, n)
            if not lv:
                continue
            out.append(
                f"| {n} | {CONFIG_LABELS[c]} | "
                f"{_fmt(_get(lv, 'dispatch_ms', 'p50'), 0)} / {_fmt(_get(lv, 'dispatch_ms', 'p99'), 0)} | "
                f"{_fmt(_get(lv, 'completion_ms', 'p50'), 0)} / {_fmt(_get(lv, 'completion_ms', 'p99'), 0)} | "
                f"{_fmt(lv.get('seconds_release_to_all_results'), 2)} | "
                f"{_fmt(lv.get('node_cpu_ms_per_task'), 2)} | {_fmt(lv.get('node_peak_rss_mb'))} | "
                f"{_fmt(lv.get('node_fds_peak'), 0)} / {_fmt(lv.get('node_sockets_peak'), 0)} | "
                f"{_fmt(lv.get('api_requests_per_task'), 2)} | {_fmt(lv.get('seconds_to_all_in_flight'))} | "
                f"{_fmt(lv.get('cluster_cpu_seconds'))} |")
    ratios = poll_ratios(results)
    if ratios:
        out += ["", "Completion p99, poll ÷ watch, per level: " + ", ".join(
            f"{n}: {r:.1f}×" for n, r in sorted(ratios.items())) + "."]
    return out


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
               color=["#3b7dd8", "#9cc0f0", "#5aa469", "#a8d5b0", "#d8733b", "#f0b99c"][:len(meds)])
        ax.set_xticks(range(len(meds)), labels, fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=8)

    def per_level(ax, key, q, title, ylabel, logy=False):
        by_cfg = _get(results, "scale", "levels", default={})
        for c, style in zip(_cfgs(by_cfg), ("o-", "s--", "^:")):
            ns = sorted(by_cfg[c], key=int)
            ys = [(_get(by_cfg[c][n], key, q, "median") if q else
                   _get(by_cfg[c][n], key, "median")) for n in ns]
            ax.plot([int(n) for n in ns], [y or 0 for y in ys], style, label=CONFIG_LABELS[c])
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xlabel("runs in flight", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    lat = results.get("latency") or {}
    cfgs = _cfgs(lat)
    bar(axes[0][0], [f"{c} {q}" for c in cfgs for q in ("p50", "p99")],
        [_get(lat, c, "completion_ms", q) for c in cfgs for q in ("p50", "p99")],
        "one task at a time: container exit → result at the researcher", "ms")
    per_level(axes[0][1], "completion_ms", "p99", "scale: completion p99", "ms", logy=True)
    per_level(axes[0][2], "seconds_release_to_all_results", None,
              "scale: release → all results at the server", "s", logy=True)
    per_level(axes[1][0], "node_cpu_ms_per_task", None, "scale: node CPU per run", "ms")
    per_level(axes[1][1], "node_peak_rss_mb", None, "scale: node peak RSS", "MB")
    per_level(axes[1][2], "node_sockets_peak", None, "scale: node sockets (peak)", "sockets",
              logy=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
