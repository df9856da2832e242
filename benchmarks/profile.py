"""`python -m benchmarks.profile [--runs N] [--no-live]`: where the time goes at N runs in flight.

Starts one benchmark stack (the node's defaults, or `--no-live`), runs one scale level
(benchmarks/scale.py: N fake-runtime runs released at once) while py-spy samples the node, the
local cluster and the server, and writes benchmarks/profile.md: per process, the busiest threads and the
functions with the most samples on top of the stack (self) and anywhere in it (inclusive).
py-spy comes with `make bench` (benchmarks/requirements.txt) and needs ptrace rights (root, or
kernel.yama.ptrace_scope=0).
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import scale
from benchmarks.harness import REPO, start_bench

log = logging.getLogger("benchmarks.profile")
HERE = Path(__file__).resolve().parent


def _record(pid: int, out: Path) -> subprocess.Popen:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--rate", "100", "--threads",
                             "--nonblocking", "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def _frame(text: str) -> str:
    """'func (path/to/file.py:12)' → 'func (file.py)'; line numbers vary within a function."""
    name, _, where = text.partition(" (")
    return f"{name} ({Path(where.split(':')[0]).name})" if where else name


def summarise(raw: str, top: int = 15) -> dict:
    """py-spy raw (collapsed) stacks → samples per thread, top self and inclusive functions."""
    threads, self_, incl = collections.Counter(), collections.Counter(), collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = frames[0] if frames and frames[0].startswith("thread") else "?"
        funcs = [_frame(f) for f in frames[1:]] if thread != "?" else [_frame(f) for f in frames]
        total += n
        threads[thread] += n
        if funcs:
            self_[funcs[-1]] += n
        for f in set(funcs):
            incl[f] += n
    return {"samples": total, "threads": threads.most_common(8),
            "self": self_.most_common(top), "inclusive": incl.most_common(top)}


def _markdown(summaries: dict, meta: dict) -> str:
    lines = [f"# Profile: {meta['runs']} runs in flight, released at once ({meta['date']}, "
             f"commit {meta['commit']}, live channel {'on' if meta['live'] else 'off'}; "
             f"recorded: {'the whole level' if meta['phase'] == 'level' else 'release to last result'})",
             "",
             f"Level: {json.dumps(meta['level'])}", ""]
    for proc, s in summaries.items():
        total = max(s["samples"], 1)
        lines += [f"## {proc}: {s['samples']} samples (100 per second per thread, idle included)",
                  "", "| thread | share |", "|---|---|"]
        lines += [f"| {t} | {n * 100 / total:.1f} % |" for t, n in s["threads"]]
        for kind in ("self", "inclusive"):
            lines += ["", f"| function ({kind}) | share |", "|---|---|"]
            lines += [f"| `{f}` | {n * 100 / total:.1f} % |" for f, n in s[kind]]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--no-live", action="store_true")
    p.add_argument("--phase", choices=("level", "release"), default="level",
                   help="what to record: the whole level (starting 1,000 runs included), or "
                        "only from the release to the last result")
    p.add_argument("--workdir", type=Path, default=REPO / "run" / "profile")
    p.add_argument("--out", type=Path, default=HERE / "profile.md")
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if a.workdir.exists():
        shutil.rmtree(a.workdir)
    gate = scale.Gate(a.workdir / "fake-gate")
    gate.reset()
    images = a.workdir / "fake-images.yaml"
    images.write_text(scale.fake_images(gate.root))
    bench = start_bench(a.workdir / "stack", "watch", live=not a.no_live, images=[images])
    try:
        recorders: dict = {}

        def record() -> None:
            for name, pid, path in (("node", bench.node_pid, a.workdir / "node.txt"),
                                    ("local cluster", bench.cluster.pid,
                                     a.workdir / "cluster.txt"),
                                    ("server", bench.stack.procs["server"].popen.pid,
                                     a.workdir / "server.txt")):
                recorders[name] = (_record(pid, path), path)
            time.sleep(1)  # py-spy attaches

        if a.phase == "level":
            record()
        # run_level restarts the node: profile the one it starts
        bench.restart_node = lambda: None
        level = scale.run_level(bench, gate, a.runs, timeout=1200,
                                on_release=record if a.phase == "release" else None)
        for proc, _ in recorders.values():
            _stop(proc)
    finally:
        bench.close()
    summaries = {}
    for name, (proc, path) in recorders.items():
        if not path.exists():
            log.error("py-spy wrote nothing for the %s: %s", name,
                      proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else "")
            return 1
        summaries[name] = summarise(path.read_text())
    keep = {k: level[k] for k in ("seconds_release_to_all_results", "node_cpu_ms_per_task",
                                  "node_peak_rss_mb", "cluster_cpu_seconds")}
    keep["completion_p99_ms"] = level["completion_ms"].get("p99")
    from benchmarks.__main__ import _git_commit
    a.out.write_text(_markdown(summaries, {
        "runs": a.runs, "live": not a.no_live, "level": keep, "phase": a.phase, "commit": _git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}))
    log.info("wrote %s", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
