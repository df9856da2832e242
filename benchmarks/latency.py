"""Dispatch overhead, completion latency and API requests per task: watch and poll side by side.

Tasks run one at a time, alternating between two identical stacks whose nodes differ only in
`completion.mode`, so both see the same machine at the same moment. Each stack has its own local
cluster, so its request counter sees only its own node.
"""
from __future__ import annotations

import time

from benchmarks.harness import Bench, BenchError
from benchmarks.stats import across, summary

EXIT_IMAGE = "bench/exit"


def _requests_of_one_task(bench: Bench, timeout: float = 60) -> tuple[int, dict, dict]:
    """Run one task; (run id, the cluster requests it cost, timings)."""
    bench.cluster.reset_metrics()
    before = time.time()
    run_id, answered = bench.submit(EXIT_IMAGE)
    bench.listener.wait([run_id], timeout)
    # the Job is deleted right after the result is queued: count that request too
    deadline = time.monotonic() + 10
    while True:
        metrics = bench.cluster.metrics()
        if metrics["requests"].get("delete jobs") or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return run_id, metrics, {"posted": before, "answered": answered}


def run_latency(benches: dict[str, Bench], tasks: int) -> dict:
    """One repeat: `tasks` tasks per mode, alternating. Raw samples per mode (ms)."""
    raw = {mode: {"runs": [], "requests": [], "by_verb": {}} for mode in benches}
    for _ in range(tasks):
        for mode, bench in benches.items():
            run_id, metrics, times = _requests_of_one_task(bench)
            raw[mode]["runs"].append((run_id, times))
            raw[mode]["requests"].append(metrics["total"])
            for key, n in metrics["requests"].items():
                raw[mode]["by_verb"][key] = raw[mode]["by_verb"].get(key, 0) + n
    out = {}
    for mode, bench in benches.items():
        nlog = bench.node_log()
        dispatch, dispatch_e2e, completion, detection, delivery = [], [], [], [], []
        statuses = {}
        for run_id, times in raw[mode]["runs"]:
            arrived, data = bench.listener.results[run_id]
            statuses[data["status"]] = statuses.get(data["status"], 0) + 1
            if run_id in nlog.accepted and run_id in nlog.created:
                dispatch.append((nlog.created[run_id] - nlog.accepted[run_id]) * 1000)
                dispatch_e2e.append((nlog.created[run_id] - times["posted"]) * 1000)
            try:
                exited = float(str(data.get("data") or "").strip())
            except ValueError:
                raise BenchError(f"run {run_id} ({data.get('status')}) has no exit timestamp: "
                                 f"{str(data.get('logs'))[-300:]}") from None
            completion.append((arrived - exited) * 1000)
            if run_id in nlog.finished:
                detection.append((nlog.finished[run_id] - exited) * 1000)
                delivery.append((arrived - nlog.finished[run_id]) * 1000)
        n = len(raw[mode]["runs"])
        out[mode] = {
            "tasks": n, "statuses": statuses,
            "dispatch_ms": summary(dispatch),
            "dispatch_end_to_end_ms": summary(dispatch_e2e),
            "completion_ms": summary(completion),
            "completion_detect_ms": summary(detection),
            "completion_deliver_ms": summary(delivery),
            "api_requests_per_task": summary(raw[mode]["requests"]),
            "api_requests_by_verb_per_task": {k: v / n for k, v in
                                              sorted(raw[mode]["by_verb"].items())},
        }
    return out


FIGURES = ("dispatch_ms", "dispatch_end_to_end_ms", "completion_ms", "completion_detect_ms",
           "completion_deliver_ms", "api_requests_per_task")


def combine(repeats: list[dict]) -> dict:
    """Median and spread over repeats of each mode's p50/p99, and the poll/watch ratio."""
    modes = repeats[0].keys()
    out = {mode: {fig: across([r[mode][fig] for r in repeats], ("p50", "p99", "mean"))
                  for fig in FIGURES} for mode in modes}
    for mode in modes:
        out[mode]["tasks_per_repeat"] = repeats[0][mode]["tasks"]
        out[mode]["statuses"] = [r[mode]["statuses"] for r in repeats]
        out[mode]["api_requests_by_verb_per_task"] = repeats[-1][mode][
            "api_requests_by_verb_per_task"]
    if "watch" in out and "poll" in out:
        ratios = {}
        for q in ("p50", "p99"):
            per = [r["poll"]["completion_ms"][q] / r["watch"]["completion_ms"][q]
                   for r in repeats if r["watch"]["completion_ms"].get(q)]
            ratios[q] = across([{"v": v} for v in per], ("v",))["v"]
        out["completion_ratio_poll_over_watch"] = ratios
    return out
