"""Many runs in flight at once: the node's CPU time, peak memory and per-task overhead.

Every pod of a level blocks opening a FIFO in the mounted "gate" folder; when all N are running
(N processes blocked on it), the benchmark opens and closes the FIFO, which releases them all, and
keeps doing so for any late one. The node is restarted before each level, so its CPU time and
peak RSS (VmHWM) belong to that level.
"""
from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from benchmarks import procstat
from benchmarks.harness import Bench, BenchError
from benchmarks.stats import summary

GATE_IMAGE = "bench/gate"
_MARK = b"gate/fifo"


def _waiting_pods(cluster_pid: int) -> int:
    """Containers of this cluster (its child processes) whose command line names the gate FIFO:
    the pods not yet released."""
    n = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            if parent != cluster_pid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if _MARK in f.read():
                    n += 1
        except (OSError, ValueError, IndexError):
            continue
    return n


def _release(fifo: Path) -> bool:
    """Open and close the FIFO for writing: every reader blocked in open() sees EOF."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ENXIO:  # no reader at the moment
            return False
        raise
    os.close(fd)
    return True


def run_level(bench: Bench, n: int, timeout: float) -> dict:
    fifo = bench.gate_dir / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    os.chmod(fifo, 0o666)
    bench.restart_node()
    pid = bench.node_pid
    rss_idle = procstat.rss_mb(pid)
    cpu0 = procstat.cpu_seconds(pid)
    cluster_cpu0 = procstat.cpu_seconds(bench.cluster.pid)
    bench.cluster.reset_metrics()
    t0 = time.time()
    runs = [bench.submit(GATE_IMAGE, ["gate"])[0] for _ in range(n)]
    t_submitted = time.time()
    deadline = time.monotonic() + timeout
    while (waiting := _waiting_pods(bench.cluster.pid)) < n:
        if time.monotonic() > deadline:
            raise BenchError(f"only {waiting} of {n} runs in flight after {timeout:.0f}s")
        failed = [r for r in runs if r in bench.listener.results]
        if failed:
            data = bench.listener.results[failed[0]][1]
            raise BenchError(f"run {failed[0]} ended before release: {data.get('status')} "
                             f"{str(data.get('logs'))[-300:]}")
        time.sleep(0.2)
    t_in_flight = time.time()
    in_flight_rss = procstat.rss_mb(pid)
    cpu_in_flight = procstat.cpu_seconds(pid)
    while _waiting_pods(bench.cluster.pid):
        _release(fifo)
        if time.monotonic() > deadline:
            raise BenchError("pods still waiting on the gate after the deadline")
        time.sleep(0.05)
    bench.listener.wait(runs, max(10.0, deadline - time.monotonic()))
    t_done = time.time()
    # the node deletes each Job after queueing its result: let it finish that work
    want = n
    while bench.cluster.metrics()["requests"].get("delete jobs", 0) < want:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    cpu = procstat.cpu_seconds(pid) - cpu0
    peak = procstat.peak_rss_mb(pid)
    metrics = bench.cluster.metrics()
    nlog = bench.node_log()
    dispatch = [(nlog.created[r] - nlog.accepted[r]) * 1000 for r in runs
                if r in nlog.created and r in nlog.accepted]
    completion, statuses = [], {}
    for r in runs:
        arrived, data = bench.listener.results[r]
        statuses[data["status"]] = statuses.get(data["status"], 0) + 1
        try:
            completion.append((arrived - float(str(data.get("data")).strip())) * 1000)
        except ValueError:
            pass
    return {
        "runs": n, "statuses": statuses,
        "in_flight": n,
        "seconds_to_submit": t_submitted - t0,
        "seconds_to_all_in_flight": t_in_flight - t0,
        "seconds_release_to_all_results": t_done - t_in_flight,
        "node_cpu_seconds": cpu,
        "node_cpu_ms_per_task": cpu * 1000 / n,
        "node_cpu_ms_per_task_start": (cpu_in_flight - cpu0) * 1000 / n,
        "node_cpu_ms_per_task_finish": (cpu - (cpu_in_flight - cpu0)) * 1000 / n,
        "node_rss_idle_mb": rss_idle,
        "node_rss_in_flight_mb": in_flight_rss,
        "node_peak_rss_mb": peak,
        "cluster_cpu_seconds": procstat.cpu_seconds(bench.cluster.pid) - cluster_cpu0,
        "dispatch_ms": summary(dispatch),
        "completion_ms": summary(completion),
        "api_requests_per_task": metrics["total"] / n,
        "api_requests_by_verb": metrics["requests"],
    }
