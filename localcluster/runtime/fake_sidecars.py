"""The fake runtime's sidecar host: ``python -m localcluster.runtime.fake_sidecars``.

One process per cluster, started by `localcluster.runtime.fake` on the first live-channel
sidecar of a fake pod, hosts every such sidecar as a real `node.sidecar.Sidecar` (the node's own
class, built from the container's environment, bound on the fake pod's loopback IP) in one thread
with one ZeroMQ poller: heartbeats, pongs and the final "stopped" heartbeat are the real ones, at
the cost of two sockets per pod instead of a Python process.

Commands on stdin, one per line: ``start <id> <json {"env": {...}}>``, ``stop <id>`` (as SIGTERM:
the "stopped" heartbeat, then answers pings until the node has every progress event or
LIVE_DRAIN_SECONDS pass) and ``kill <id>`` (as SIGKILL: closed at once). Replies on stdout:
``ready <id> <pub port> <rep port>``, ``failed <id> <json message>`` (the sidecar cannot start:
its container exits 2, as ``python -m node sidecar`` does) and ``exited <id> <code>``. End of
stdin (the cluster stopped or died) closes every sidecar and ends the process.
"""
from __future__ import annotations

import heapq
import json
import logging
import os
import resource
import signal
import sys
import time

import zmq

from node.cgroup_usage import unavailable
from node.isolation_probe import not_run
from node.sidecar import Sidecar, SidecarError, SidecarSettings

log = logging.getLogger("localcluster.runtime.fake_sidecars")
# fake pods share this process and the host's network: no pod network to probe, no pod cgroup
FAKE_ISOLATION = not_run("the local cluster's fake runtime has no pod network to probe")


def FAKE_USAGE() -> dict:
    return unavailable("the local cluster's fake runtime runs no pod")

TAIL_INTERVAL = 0.2  # progress files are read less often than by one sidecar: there are many
BEAT_SLACK = 0.01  # heartbeats due this close together go out in one pass
MAX_WAIT = 0.5
MAX_SOCKETS = 65536  # two per sidecar; zmq's default is 1023
EXIT_STOPPED, EXIT_KILLED, EXIT_FAILED = 0, 137, 2


class Hosted:
    __slots__ = ("id", "sidecar", "drain_until")

    def __init__(self, cid: str, sidecar: Sidecar) -> None:
        self.id, self.sidecar = cid, sidecar
        self.drain_until: float | None = None  # set when stopping


class Host:
    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd
        self.ctx = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, MAX_SOCKETS)  # before the first socket
        self.poller = zmq.Poller()
        self.poller.register(rfd, zmq.POLLIN)
        self.hosted: dict[str, Hosted] = {}
        self.by_rep: dict[zmq.Socket, Hosted] = {}
        self.stopping: dict[str, Hosted] = {}
        self.beats: list[tuple[float, int, str]] = []  # (due, tie-break, id): one heap for all
        self.counter = 0
        self.buf = b""
        self.eof = False
        self.next_tail = 0.0

    # -- replies and commands ---------------------------------------------------------------
    def reply(self, *words: object) -> None:
        try:
            os.write(self.wfd, (" ".join(map(str, words)) + "\n").encode())
        except BrokenPipeError:
            self.eof = True  # the cluster is gone

    def read_commands(self) -> None:
        data = os.read(self.rfd, 65536)
        if not data:
            self.eof = True
            return
        *lines, self.buf = (self.buf + data).split(b"\n")
        for line in lines:
            try:
                self.command(line.decode())
            except Exception:  # one bad command must not take every sidecar down
                log.exception("bad command %r", line[:200])

    def command(self, line: str) -> None:
        verb, _, rest = line.strip().partition(" ")
        cid, _, arg = rest.partition(" ")
        if verb == "start":
            self.start(cid, json.loads(arg).get("env") or {})
        elif verb == "stop" and cid in self.hosted and cid not in self.stopping:
            h = self.hosted[cid]
            h.sidecar.begin_stop()
            h.drain_until = time.monotonic() + h.sidecar.s.drain_seconds
            self.stopping[cid] = h
        elif verb == "kill" and cid in self.hosted:
            self.close(self.hosted[cid], linger=0)
            self.reply("exited", cid, EXIT_KILLED)
        elif verb not in ("stop", "kill"):
            log.warning("unknown command %r", verb[:40])

    def start(self, cid: str, env: dict[str, str]) -> None:
        if cid in self.hosted:
            return
        try:
            sidecar = Sidecar(SidecarSettings.from_env(env), self.ctx, usage=FAKE_USAGE)
        except SidecarError as e:
            self.reply("failed", cid, json.dumps(f"cannot start: {e}"))
            return
        h = self.hosted[cid] = Hosted(cid, sidecar)
        self.by_rep[sidecar.rep] = h
        self.poller.register(sidecar.rep, zmq.POLLIN)
        sidecar.announce()
        sidecar.set_isolation(FAKE_ISOLATION)  # for start_probe(): nothing here to probe
        sidecar.heartbeat()  # as run() does at once
        self.schedule(h, time.monotonic())
        log.debug("run %s: live channel on %s (pub %d, rep %d)", sidecar.s.run_id,
                  sidecar.s.host, sidecar.pub_port, sidecar.rep_port)
        self.reply("ready", cid, sidecar.pub_port, sidecar.rep_port)

    def schedule(self, h: Hosted, now: float) -> None:
        self.counter += 1
        heapq.heappush(self.beats, (now + h.sidecar.s.heartbeat_seconds, self.counter, h.id))

    def close(self, h: Hosted, linger: int | None = None) -> None:
        self.hosted.pop(h.id, None)
        self.stopping.pop(h.id, None)
        self.by_rep.pop(h.sidecar.rep, None)
        self.poller.unregister(h.sidecar.rep)
        if linger is not None:
            for sock in (h.sidecar.pub, h.sidecar.rep):
                sock.linger = linger
        h.sidecar.close()  # the default linger still sends the "stopped" heartbeat

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        while not self.eof:
            now = time.monotonic()
            wake = min([self.next_tail, *(h.drain_until or now for h in self.stopping.values()),
                        *([self.beats[0][0]] if self.beats else [])])
            timeout = min(MAX_WAIT, max(0.0, wake - now))
            for sock, _ in self.poller.poll(timeout * 1000):
                if sock == self.rfd:
                    self.read_commands()
                elif (h := self.by_rep.get(sock)) is not None:
                    h.sidecar.serve_ready()
            self.housekeeping(time.monotonic())
        for h in list(self.hosted.values()):
            self.close(h, linger=0)
        self.ctx.term()

    def housekeeping(self, now: float) -> None:
        while self.beats and self.beats[0][0] <= now + BEAT_SLACK:
            _, _, cid = heapq.heappop(self.beats)
            h = self.hosted.get(cid)
            if h is not None and cid not in self.stopping:
                h.sidecar.heartbeat()
                self.schedule(h, now)
        if now >= self.next_tail:
            self.next_tail = now + TAIL_INTERVAL
            for h in self.hosted.values():
                if h.id not in self.stopping:
                    h.sidecar.poll_progress()
        for h in list(self.stopping.values()):
            if h.sidecar.drained or now >= (h.drain_until or 0):
                if not h.sidecar.drained:
                    log.warning("run %s: stopping with progress events %d..%d not fetched by "
                                "the node", h.sidecar.s.run_id, h.sidecar.delivered + 1,
                                h.sidecar.seq)
                self.close(h)
                self.reply("exited", h.id, EXIT_STOPPED)


def _raise_fd_limit() -> None:
    # each sidecar holds two listening sockets and their connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit to %d: %s", hard, e)


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the cluster ends us by closing stdin
    _raise_fd_limit()
    Host(sys.stdin.fileno(), sys.stdout.fileno()).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
