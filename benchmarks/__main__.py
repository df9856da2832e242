"""`python -m benchmarks [--quick]`: measure the node and the proxy on the local cluster and write
results.json, results.md and results.png (see benchmarks/README.md for the method)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import latency, live_cost, procstat, report, scale
from benchmarks.harness import REPO, Bench, BenchError, start_bench
from benchmarks.proxy_bench import ProxyRig
from benchmarks.stats import across, spread

log = logging.getLogger("benchmarks")
HERE = Path(__file__).resolve().parent
# (name, completion mode, live channel): the node's defaults first, then the live channel off,
# then the vantage6-style baseline (polling every second, otherwise the defaults)
CONFIGS = (("watch", "watch", True), ("watch-nolive", "watch", False), ("poll", "poll", True))


@dataclass(frozen=True)
class Settings:
    quick: bool
    repeats: int            # repeats of every measurement
    tasks: int              # tasks per mode per repeat (dispatch, completion, API cost)
    scale_levels: tuple[int, ...]
    scale_repeats: int
    scale_configs: tuple[str, ...]  # which of CONFIGS run the scale levels
    progress_tasks: int     # live-channel progress tasks per repeat
    idle_seconds: float     # minimum idle window per repeat
    proxy_requests: int     # per side per repeat
    stream_bytes: int
    poll_interval: float
    out: Path
    workdir: Path
    plot: bool


def settings_from(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a few seconds per part (development)")
    p.add_argument("--repeats", type=int)
    p.add_argument("--tasks", type=int)
    p.add_argument("--scale", help="runs in flight per level, comma separated (e.g. 10,100,1000)")
    p.add_argument("--scale-repeats", type=int)
    p.add_argument("--scale-configs", help="which stacks run the scale levels, comma separated: "
                   + ", ".join(c[0] for c in CONFIGS) + " (default: all)")
    p.add_argument("--progress-tasks", type=int, help="live-channel progress tasks per repeat")
    p.add_argument("--idle-seconds", type=float)
    p.add_argument("--proxy-requests", type=int)
    p.add_argument("--stream-mb", type=int, help="megabytes streamed through the proxy")
    p.add_argument("--out", type=Path, default=HERE, help="where results.* go")
    p.add_argument("--workdir", type=Path, default=REPO / "run" / "bench")
    p.add_argument("--no-plot", action="store_true")
    a = p.parse_args(argv)
    q = a.quick
    levels = tuple(int(x) for x in a.scale.split(",")) if a.scale else \
        ((2, 5) if q else (10, 100, 1000, 5000))
    names = [c[0] for c in CONFIGS]
    configs = tuple(x.strip() for x in a.scale_configs.split(",")) if a.scale_configs else \
        tuple(names)
    if any(c not in names for c in configs):
        p.error(f"--scale-configs: choose from {', '.join(names)}")
    if any(n < 1 for n in levels) or any(v is not None and v < 1 for v in
                                         (a.repeats, a.tasks, a.scale_repeats, a.proxy_requests,
                                          a.progress_tasks)):
        p.error("counts must be positive")
    return Settings(
        quick=q, repeats=a.repeats or (2 if q else 3), tasks=a.tasks or (3 if q else 25),
        scale_levels=levels, scale_repeats=a.scale_repeats or 1, scale_configs=configs,
        progress_tasks=a.progress_tasks or (2 if q else 5),
        idle_seconds=a.idle_seconds if a.idle_seconds is not None else (3 if q else 40),
        proxy_requests=a.proxy_requests or (100 if q else 2000),
        stream_bytes=(a.stream_mb or (20 if q else 1000)) * 1_000_000,
        poll_interval=1.0, out=a.out, workdir=a.workdir, plot=not a.no_plot)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "") if out.returncode == 0 else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def _idle_window(benches: dict[str, Bench], rig: ProxyRig, s: Settings) -> tuple[dict, dict]:
    """Idle nodes while the proxy is measured (it does not touch the clusters)."""
    start = {}
    for mode, b in benches.items():
        b.cluster.reset_metrics()
        start[mode] = (time.monotonic(), procstat.cpu_seconds(b.node_pid))
    lat = rig.latency(s.proxy_requests)
    stream = rig.stream(s.stream_bytes)
    # wait out the rest of the idle window
    t_end = min(t for t, _ in start.values()) + s.idle_seconds
    while time.monotonic() < t_end:
        time.sleep(min(1.0, t_end - time.monotonic()))
    idle = {}
    for mode, b in benches.items():
        total = b.cluster.metrics()
        seconds = time.monotonic() - start[mode][0]
        cpu = procstat.cpu_seconds(b.node_pid) - start[mode][1]
        idle[mode] = {"seconds": seconds, "requests": total["total"],
                      "by_verb": total["requests"],
                      "requests_per_minute": total["total"] * 60 / seconds,
                      "requests_per_30s": total["total"] * 30 / seconds,
                      "node_cpu_seconds_per_minute": cpu * 60 / seconds}
    return idle, {"latency": lat, "stream": stream}


def run(s: Settings) -> dict:
    started = time.time()
    if s.workdir.exists():
        shutil.rmtree(s.workdir)
    results: dict = {"meta": {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": s.quick,
        "commit": _git_commit(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()}}}
    results["meta"]["repeats"] = s.repeats
    benches: dict[str, Bench] = {}
    rig = None
    try:
        log.info("starting %d stacks: %s (poll: every %.1f s)", len(CONFIGS),
                 ", ".join(c[0] for c in CONFIGS), s.poll_interval)
        gates = {}
        for name, mode, live in CONFIGS:
            gates[name] = scale.Gate(s.workdir / name / "fake-gate")
            gates[name].reset()
            images = s.workdir / name / "fake-images.yaml"
            images.write_text(scale.fake_images(gates[name].root))
            benches[name] = start_bench(s.workdir / name, mode, s.poll_interval, live=live,
                                        images=[images])
        rig = ProxyRig(s.workdir / "proxy")
        lat_runs, idle_runs, proxy_runs, progress_runs = [], [], [], []
        for i in range(s.repeats):
            log.info("repeat %d/%d: %d tasks per stack, one at a time", i + 1, s.repeats, s.tasks)
            lat_runs.append(latency.run_latency(benches, s.tasks))
            log.info("repeat %d/%d: %d live-channel progress tasks", i + 1, s.repeats,
                     s.progress_tasks)
            progress_runs.append(live_cost.run_progress(benches["watch"], s.progress_tasks))
            log.info("repeat %d/%d: idle nodes (>= %.0f s) while the proxy is measured",
                     i + 1, s.repeats, s.idle_seconds)
            idle, proxy = _idle_window(benches, rig, s)
            idle_runs.append(idle)
            proxy_runs.append(proxy)
        results["latency"] = latency.combine(lat_runs)
        results["idle"] = {mode: {k: spread(r[mode][k] for r in idle_runs) for k in
                                  ("requests_per_minute", "requests_per_30s",
                                   "node_cpu_seconds_per_minute")}
                           for mode in benches}
        results["idle"]["window_seconds"] = sum(r["watch"]["seconds"] for r in idle_runs) / len(idle_runs)
        results["idle"]["watch_timeout_seconds"] = 300  # the node default, which the stacks keep
        results["idle"]["raw"] = idle_runs
        results["proxy"] = {
            "latency": {k: across([r["latency"][k] for r in proxy_runs], ("p50", "p99", "mean"))
                        for k in ("direct_ms", "proxy_ms", "overhead_ms")},
            "stream": {k: spread(r["stream"][k] for r in proxy_runs) for k in
                       ("proxy_peak_rss_mb", "proxy_rss_before_mb", "proxy_mb_per_s",
                        "direct_mb_per_s")},
            "stream_bytes": s.stream_bytes, "requests_per_repeat": s.proxy_requests,
            "raw": proxy_runs}
        results["latency_raw"] = lat_runs
        results["progress"] = {
            "latency_ms": across([r["latency_ms"] for r in progress_runs], ("p50", "p99", "mean")),
            "lines_written": sum(r["lines_written"] for r in progress_runs),
            "lines_received": sum(r["lines_received"] for r in progress_runs),
            "raw": progress_runs}
        rig.close()
        rig = None
        # one stack at a time runs the levels; the others stay idle (watch nodes cost nothing
        # then, a polling node lists its few Jobs every second)
        levels: dict[str, dict[str, list[dict]]] = {}
        for i in range(s.scale_repeats):
            for n in s.scale_levels:
                for name in s.scale_configs:
                    log.info("scale repeat %d/%d: %d runs in flight, %s", i + 1,
                             s.scale_repeats, n, name)
                    levels.setdefault(name, {}).setdefault(str(n), []).append(
                        scale.run_level(benches[name], gates[name], n, timeout=1200))
        results["scale"] = {"levels": {name: {n: _combine_level(runs) for n, runs in by_n.items()}
                                       for name, by_n in levels.items()},
                            "raw": levels}
    finally:
        if rig is not None:
            rig.close()
        for b in benches.values():
            b.close()
    results["meta"]["duration_seconds"] = time.time() - started
    results["targets"] = report.targets(results)
    return results


def _combine_level(runs: list[dict]) -> dict:
    out = {}
    for key in ("node_cpu_ms_per_task", "node_cpu_ms_per_task_start", "node_cpu_ms_per_task_finish",
                "node_peak_rss_mb", "node_rss_idle_mb", "node_rss_in_flight_mb",
                "node_fds_idle", "node_sockets_idle", "node_fds_in_flight",
                "node_sockets_in_flight", "node_fds_peak", "node_sockets_peak",
                "api_requests_per_task", "seconds_to_all_in_flight",
                "seconds_release_to_all_results", "cluster_cpu_seconds", "seconds_to_submit"):
        out[key] = spread(r[key] for r in runs)
    for key in ("dispatch_ms", "completion_ms"):
        out[key] = across([r[key] for r in runs], ("p50", "p99", "mean"))
    out["statuses"] = [r["statuses"] for r in runs]
    return out


def write(results: dict, s: Settings) -> list[Path]:
    s.out.mkdir(parents=True, exist_ok=True)
    paths = [s.out / "results.json", s.out / "results.md"]
    paths[0].write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    paths[1].write_text(report.markdown(results))
    if s.plot:
        png = s.out / "results.png"
        if report.plot(results, png):
            paths.append(png)
        else:
            log.warning("matplotlib is not installed: no plot (pip install -r "
                        "benchmarks/requirements.txt)")
    return paths


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    s = settings_from(argv)
    # SIGTERM (make, CI) unwinds like Ctrl-C, so every process started is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        results = run(s)
    except BenchError as e:
        log.error("benchmark failed: %s (logs under %s)", e, s.workdir)
        return 1
    for path in write(results, s):
        log.info("wrote %s", path)
    sys.stdout.write(report.markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
