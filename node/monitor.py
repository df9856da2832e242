"""``python -m node monitor``: a live table of the node's runs, from the node's PUB socket.

    python -m node monitor --config node.yaml        # address from live.node_pub_host/port
    python -m node monitor --connect tcp://127.0.0.1:5560 [--once] [--timeout 10]

The node publishes a ``snapshot`` of all its runs every heartbeat interval (CONTRACTS §9); the
table is redrawn on each. ``--once`` prints the first snapshot and exits (0, or 1 when none
arrived within ``--timeout``).
"""
from __future__ import annotations

import argparse
import sys
import time

import zmq

from node import live_frames as F

COLUMNS = ("RUN", "TASK", "STATUS", "PROGRESS", "HEALTH", "AGE", "MESSAGE")


def _bar(fraction: float | None, width: int = 10) -> str:
    if fraction is None:
        return "-"
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {fraction * 100:3.0f}%"


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def render(snapshot: dict) -> str:
    """The table of one snapshot (pure)."""
    rows = [COLUMNS]
    for run in snapshot.get("runs") or []:
        if not isinstance(run, dict):
            continue
        message = " ".join(str(run.get("message") or "").split())
        rows.append((str(run.get("run_id", "?")), str(run.get("task_id") or "-"),
                     str(run.get("status") or "-"), _bar(run.get("progress")),
                     str(run.get("health") or "-"), _age(float(run.get("age") or 0)),
                     message[:50]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    head = f"node {snapshot.get('node_id', '?')}: {len(rows) - 1} run(s)"
    return "\n".join([head, *lines])


def _address(args) -> str:
    if args.connect:
        return args.connect
    from node.config import load_config
    live = load_config(args.config).live
    return f"tcp://{live.node_pub_host}:{live.node_pub_port}"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m node monitor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--connect", help="the node's PUB address, tcp://HOST:PORT")
    where.add_argument("--config", help="the node's configuration (for live.node_pub_*)")
    p.add_argument("--once", action="store_true", help="print one table and exit")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="with --once: seconds to wait for the node's first snapshot")
    args = p.parse_args(argv)
    from node.errors import NodeError
    try:
        address = _address(args)
    except NodeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.MAXMSGSIZE, F.MAX_FRAME_BYTES)
    sub.setsockopt_string(zmq.SUBSCRIBE, "")
    try:
        sub.connect(address)
    except zmq.ZMQError as e:
        print(f"error: cannot connect to {address}: {e}", file=sys.stderr)
        ctx.term()
        return 2
    deadline = time.monotonic() + args.timeout
    tty = sys.stdout.isatty()
    try:
        while True:
            wait = deadline - time.monotonic() if args.once else 1.0
            if args.once and wait <= 0:
                print(f"no snapshot from the node at {address} within {args.timeout:g}s",
                      file=sys.stderr)
                return 1
            if not sub.poll(max(0.0, wait) * 1000):
                continue
            try:
                run_id, kind, body = F.decode(sub.recv_multipart())
            except F.FrameError:
                continue
            if kind != F.SNAPSHOT:
                continue
            table = render(body)
            if args.once:
                print(table)
                return 0
            print(("\033[H\033[2J" if tty else "") + table, flush=True)
    except KeyboardInterrupt:
        return 0
    finally:
        sub.close()
        ctx.term()
