"""The live thread's ZeroMQ sockets to the sidecars (CONTRACTS §9), counted and bounded.

Each zmq socket costs a file descriptor for its mailbox plus one for its TCP connection, and
libzmq refuses more sockets than the context's MAX_SOCKETS (1023 by default). So a followed run
holds one SUB (heartbeats and progress: the steady state) and a REQ only while a ping is out
(``node/live.py``), and the sockets stay within a budget: the context's MAX_SOCKETS and the
process's open files, less a reserve for the rest of the node (its API and server connections
must never run out because of the live channel). A run that gets no socket stays unfollowed
and is retried; the runs themselves are never affected.
"""
from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass, field

import zmq

from node import live_frames as F
from node.heartbeat import Liveness
from node.limits import open_files_limit

log = logging.getLogger("node.live")  # its lines are the live channel's

NODE_SOCKETS = 1        # the node's own PUB socket, made on the same context
FDS_PER_SOCKET = 2      # mailbox + TCP connection
FD_RESERVE = 256        # open files kept for the rest of the node
RETRY_SECONDS = 2.0     # unfollowed runs are tried again this often
OUT_OF_SOCKETS = (errno.EMFILE, errno.ENFILE)
# a ping without a pong within this many heartbeat intervals (and at least PING_TIMEOUT_MIN
# seconds) is given up: a lost reply must not hold the REQ socket open (the next need opens one)
PING_TIMEOUT = 2
PING_TIMEOUT_MIN = 0.5
# Progress sent to the server per run: a burst of this many, then this many per second. An
# algorithm writing its progress file in a tight loop must not flood the server.
FORWARD_RATE = 20.0


@dataclass
class LiveRun:
    run_id: int
    task_id: int | None = None
    status: str = ""
    since: float = field(default_factory=time.time)      # first seen (wall clock): the age
    progress: float | None = None
    message: str = ""
    seq: int = 0                       # last progress event forwarded
    # waiting (no pod yet) | unfollowed (no socket to spare) | alive | suspected | failed | ended
    health: str = "waiting"
    pod: str | None = None
    ip: str | None = None              # set while the pod runs, followed (sub) or not
    sub: zmq.Socket | None = None
    req: zmq.Socket | None = None      # only while a ping is out or about to go
    liveness: Liveness | None = None
    want_ping: bool = False
    ping_sent: float | None = None     # the outstanding ping (no pong yet)
    ping_retry: float = 0.0            # no REQ socket was to spare: not before this time
    stopped: int | None = None         # the seq of the sidecar's "stopped" heartbeat
    # the pod stopped running: its sidecar may still hold the algorithm's last lines, so the
    # SUB stays open until then (or until the sidecar stopped and the node has them all)
    drain_until: float | None = None
    finished: bool = False             # forget the run once drained
    budget: float = FORWARD_RATE       # progress events the server may get right now
    budget_at: float = 0.0
    throttled: int = 0

    def view(self, now_wall: float) -> dict:
        return {"run_id": self.run_id, "task_id": self.task_id, "status": self.status,
                "age": round(now_wall - self.since, 1), "progress": self.progress,
                "message": self.message, "seq": self.seq, "health": self.health}


def make_context(max_sockets: int) -> zmq.Context:
    ctx = zmq.Context()
    # libzmq sizes its socket table when the first socket is made: set before that, or in vain
    ctx.set(zmq.MAX_SOCKETS, max_sockets)
    return ctx


def budget(max_sockets: int, open_files: int | None) -> int:
    """How many sockets the live thread may hold to sidecars."""
    by_files = ((open_files - FD_RESERVE) // FDS_PER_SOCKET if open_files is not None
                else max_sockets)
    return max(1, min(max_sockets - NODE_SOCKETS, by_files))


class Sockets:
    """Makes, polls and closes the sockets to sidecars; says once when there are none to spare,
    and again only after every run was followed in between."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.ctx = ctx
        self.poller = zmq.Poller()
        self.max_sockets = ctx.get(zmq.MAX_SOCKETS)
        self.open_files = open_files_limit()
        self.budget = budget(self.max_sockets, self.open_files)
        # SUBs leave this many for pings, so gaps and last lines can still be fetched when
        # every other socket is taken
        self.spare = max(1, min(64, self.budget // 16))
        self.open = 0
        self.owners: dict[zmq.Socket, LiveRun] = {}  # whose socket: a ready one is read alone
        self.short = False      # some socket was refused (warned once)
        self.refusals = 0       # since the last settle()

    def connect(self, kind: int, ip: str, port: int, topic: str | None = None,
                owner: LiveRun | None = None) -> zmq.Socket | None:
        """A socket connected to ip:port and polled for input (a SUB subscribed to topic), or
        None when there is no socket to spare."""
        if self.open + (self.spare if kind == zmq.SUB else 0) >= self.budget:
            self._refused(f"{self.open} open, the budget is {self.budget}")
            return None
        try:
            sock = self.ctx.socket(kind)
        except zmq.ZMQError as e:
            if e.errno not in OUT_OF_SOCKETS:
                raise
            self._refused(f"{e}, with {self.open} open")
            return None
        try:
            # a ping sent just before its socket closes (the drain's last) still goes out
            sock.linger = 200 if kind == zmq.REQ else 0
            sock.setsockopt(zmq.MAXMSGSIZE, F.MAX_FRAME_BYTES)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            if ":" in ip:
                sock.ipv6 = True
            if topic is not None:
                sock.setsockopt_string(zmq.SUBSCRIBE, topic)
            host = f"[{ip}]" if ":" in ip else ip
            sock.connect(f"tcp://{host}:{port}")
        except BaseException:
            sock.close()
            raise
        self.poller.register(sock, zmq.POLLIN)
        self.open += 1
        if owner is not None:
            self.owners[sock] = owner
        return sock

    def close(self, sock: zmq.Socket | None) -> None:
        if sock is None:
            return
        try:
            self.poller.unregister(sock)
        except KeyError:
            pass
        self.owners.pop(sock, None)
        sock.close()
        self.open -= 1

    # -- one run's sockets ---------------------------------------------------------------
    def follow(self, run: LiveRun, pod: str, ip: str, port: int) -> bool:
        """Its SUB socket; False (the run stays unfollowed) when there is none to spare."""
        run.pod, run.ip = pod, ip
        run.sub = self.connect(zmq.SUB, ip, port, topic=str(run.run_id), owner=run)
        return run.sub is not None

    def unfollow(self, run: LiveRun) -> None:
        self.close(run.sub)
        self.close(run.req)
        run.sub = run.req = run.liveness = run.ping_sent = None
        run.ip = run.pod = run.drain_until = None
        run.want_ping, run.stopped = False, None

    def pings(self, run: LiveRun, now: float, port: int, interval: float) -> None:
        """Gives up an unanswered ping; sends one when wanted (opening the REQ socket)."""
        if run.ping_sent is not None \
                and now - run.ping_sent >= max(PING_TIMEOUT * interval, PING_TIMEOUT_MIN):
            log.debug("run %s: no pong; its REQ socket is closed", run.run_id)
            self.close(run.req)
            run.req = run.ping_sent = None
        if not run.want_ping or run.sub is None or run.ping_sent is not None \
                or now < run.ping_retry:
            return
        if run.req is None:
            run.req = self.connect(zmq.REQ, run.ip, port, owner=run)
            if run.req is None:
                run.ping_retry = now + interval
                return
        run.want_ping, run.ping_sent = False, now
        try:
            run.req.send_multipart(F.encode(str(run.run_id), F.PING, {"after": run.seq}),
                                   zmq.NOBLOCK)
        except zmq.Again:
            pass  # not connected yet: PING_TIMEOUT retires the socket

    def answered(self, run: LiveRun) -> None:
        """The pong came: the REQ socket closes unless another ping is wanted."""
        run.ping_sent = None
        if not run.want_ping:
            self.close(run.req)
            run.req = None

    def _refused(self, why: str) -> None:
        self.refusals += 1
        if not self.short:
            self.short = True
            log.warning("live channel: no socket to spare for a sidecar (%s; limits: "
                        "live.max_sockets %d, open files %s): following fewer runs, the others "
                        "are retried every %gs; the runs are unaffected", why, self.max_sockets,
                        self.open_files if self.open_files is not None else "unlimited",
                        RETRY_SECONDS)

    def settle(self, all_followed: bool) -> None:
        """After a retry pass: the shortage is over once every run is followed and nothing was
        refused since the last pass."""
        if self.short and all_followed and not self.refusals:
            self.short = False
            log.info("live channel: following every run again (%d sockets open)", self.open)
        self.refusals = 0
