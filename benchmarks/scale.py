"""Many runs in flight at once: completion under a burst, the node's CPU time, memory and fds.

Pods of a level run `bench/fake-gate`, an image the local cluster runs with its kwok-like fake
runtime (no process per container, see localcluster/runtime/fake.py): the container "runs" until
the level's gate opens (a file appears), then exits 0, logging its exit time in nanoseconds. With
the live channel on, each pod's sidecar is a real `node.sidecar.Sidecar` hosted by the fake
runtime's one sidecar process, so the node connects, pings and follows heartbeats as on a real
cluster. The node is restarted before each level, so its CPU time and peak RSS belong to it.
"""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Callable

from benchmarks import procstat
from benchmarks.harness import Bench, BenchError
from benchmarks.stats import summary

GATE_IMAGE = "bench/fake-gate"
# the fake container's last log line: "fake container algorithm ran 0s, exit 0 at 1796627155.470380"
_EXITED = re.compile(r"ran \S+, exit -?\d+(?: \(OOMKilled\))? at (\d+\.\d+)")


def fake_images(gate_dir: Path) -> str:
    """The images file (YAML) that declares the fake gate image for this gate folder."""
    return ("images:\n"
            f"  {GATE_IMAGE}:\n"
            "    fake:\n"
            f"      gate: {gate_dir}\n")


class Gate:
    """The level's gate: fake containers mark `started/<id>` and wait until `open` exists."""

    def __init__(self, root: Path):
        self.root = root

    def reset(self) -> None:
        (self.root / "open").unlink(missing_ok=True)
        shutil.rmtree(self.root / "started", ignore_errors=True)
        (self.root / "started").mkdir(parents=True)

    def waiting(self) -> int:
        return sum(1 for _ in (self.root / "started").iterdir())

    def release(self) -> None:
        (self.root / "open").touch()


class Sampler:
    """The node's fds and sockets, sampled while the harness waits: peak and last."""

    def __init__(self, pid: int):
        self.pid, self.peak_fds, self.peak_sockets = pid, 0, 0

    def sample(self) -> tuple[int, int]:
        try:
            n, s = procstat.fds(self.pid)
        except OSError:
            return 0, 0
        self.peak_fds, self.peak_sockets = max(self.peak_fds, n), max(self.peak_sockets, s)
        return n, s


def _wait(pred, deadline: float, sampler: Sampler, what: str, bench: Bench, runs) -> None:
    while not pred():
        sampler.sample()
        if time.monotonic() > deadline:
            raise BenchError(f"{what} after the level's deadline")
        ended = [r for r in runs if r in bench.listener.results]
        if ended:
            data = bench.listener.results[ended[0]][1]
            raise BenchError(f"run {ended[0]} ended before release: {data.get('status')} "
                             f"{str(data.get('logs'))[-300:]}")
        time.sleep(0.1)


def run_level(bench: Bench, gate: Gate, n: int, timeout: float,
              on_release: Callable[[], None] | None = None) -> dict:
    gate.reset()
    bench.restart_node()
    pid = bench.node_pid
    sampler = Sampler(pid)
    fds_idle, sockets_idle = sampler.sample()
    rss_idle = procstat.rss_mb(pid)
    cpu0 = procstat.cpu_seconds(pid)
    cluster_cpu0 = procstat.cpu_seconds(bench.cluster.pid)
    bench.cluster.reset_metrics()
    t0 = time.time()
    runs = [bench.submit(GATE_IMAGE)[0] for _ in range(n)]
    t_submitted = time.time()
    deadline = time.monotonic() + timeout
    _wait(lambda: gate.waiting() >= n, deadline, sampler,
          f"only {gate.waiting()} of {n} runs in flight", bench, runs)
    t_in_flight = time.time()
    # Released only once the node has caught up: it saw every run active and (live on)
    # follows every sidecar. The containers' starts say nothing of the node's backlog: at
    # 1,000 runs, it still had runs to follow for 7 s after the last container started.
    def caught_up() -> bool:
        log_ = bench.node_log()
        return set(runs) <= (log_.followed if bench.live else log_.active).keys()
    _wait(caught_up, deadline, sampler, "the node has not seen every run active", bench, runs)
    t_caught_up = time.time()
    fds_in_flight, sockets_in_flight = sampler.sample()
    in_flight_rss = procstat.rss_mb(pid)
    cpu_in_flight = procstat.cpu_seconds(pid)
    if on_release is not None:
        on_release()
    t_release = time.time()
    gate.release()
    remaining = deadline - time.monotonic()

    def all_arrived() -> bool:
        sampler.sample()
        return set(runs) <= bench.listener.results.keys()
    while not all_arrived():
        if time.monotonic() > deadline:
            missing = len(set(runs) - bench.listener.results.keys())
            raise BenchError(f"{missing} of {n} results missing {remaining:.0f} s after release")
        time.sleep(0.05)
    t_done = time.time()
    # the node deletes each Job after queueing its result: let it finish that work
    while bench.cluster.metrics()["requests"].get("delete jobs", 0) < n:
        sampler.sample()
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
        m = _EXITED.findall(str(data.get("logs") or ""))
        if m:
            completion.append((arrived - float(m[-1])) * 1000)
    if len(completion) < n:
        raise BenchError(f"{n - len(completion)} of {n} results carry no exit time in their logs")
    return {
        "runs": n, "statuses": statuses, "live": bench.live, "mode": bench.mode,
        "seconds_to_submit": t_submitted - t0,
        # in flight as the node sees them: every run active, every sidecar followed (live on)
        "seconds_to_all_in_flight": t_caught_up - t0,
        "seconds_to_all_containers_started": t_in_flight - t0,
        "seconds_release_to_all_results": t_done - t_release,
        "node_cpu_seconds": cpu,
        "node_cpu_ms_per_task": cpu * 1000 / n,
        "node_cpu_ms_per_task_start": (cpu_in_flight - cpu0) * 1000 / n,
        "node_cpu_ms_per_task_finish": (cpu - (cpu_in_flight - cpu0)) * 1000 / n,
        "node_rss_idle_mb": rss_idle,
        "node_rss_in_flight_mb": in_flight_rss,
        "node_peak_rss_mb": peak,
        "node_fds_idle": fds_idle, "node_sockets_idle": sockets_idle,
        "node_fds_in_flight": fds_in_flight, "node_sockets_in_flight": sockets_in_flight,
        "node_fds_peak": sampler.peak_fds, "node_sockets_peak": sampler.peak_sockets,
        "cluster_cpu_seconds": procstat.cpu_seconds(bench.cluster.pid) - cluster_cpu0,
        "dispatch_ms": summary(dispatch),
        "completion_ms": summary(completion),
        "api_requests_per_task": metrics["total"] / n,
        "api_requests_by_verb": metrics["requests"],
    }
