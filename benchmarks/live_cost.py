"""The live channel's latency: a progress line written by the algorithm → `task_progress` at a
researcher's socket.

`bench/progress` (benchmarks/images.yaml) appends 20 lines 50 ms apart to its progress file, each
carrying its own write time (`date +%s.%N`); the researcher's socket notes when each arrives. The
path measured is the whole of CONTRACTS §9: the sidecar tails the file and publishes, the node's
live thread forwards to the server, the server sends `task_progress`. Tasks run one at a time.
"""
from __future__ import annotations

import time

from benchmarks.harness import Bench, BenchError
from benchmarks.stats import summary

PROGRESS_IMAGE = "bench/progress"
LINES = 20


def run_progress(bench: Bench, tasks: int, timeout: float = 60) -> dict:
    latencies, received, expected = [], 0, 0
    for _ in range(tasks):
        run_id, _ = bench.submit(PROGRESS_IMAGE)
        bench.listener.wait([run_id], timeout)
        status = bench.listener.results[run_id][1].get("status")
        if status != "completed":
            raise BenchError(f"progress run {run_id} ended {status}: "
                             f"{str(bench.listener.results[run_id][1].get('logs'))[-300:]}")
        expected += LINES
        # progress is fire and forget and may trail the result by a moment
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(_events(bench, run_id)) < LINES:
            time.sleep(0.05)
        for arrived, event in _events(bench, run_id):
            try:
                latencies.append((arrived - float(event.get("message") or "")) * 1000)
                received += 1
            except ValueError:
                continue
    return {"tasks": tasks, "lines_written": expected, "lines_received": received,
            "latency_ms": summary(latencies)}


def _events(bench: Bench, run_id: int) -> list[tuple[float, dict]]:
    return [(t, e) for t, e in list(bench.listener.progress) if e.get("run_id") == run_id]
