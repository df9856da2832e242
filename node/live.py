"""The node's end of the live channel (CONTRACTS §9): one thread owns every ZeroMQ socket.

For each run whose pod is Running with a pod IP, it connects a SUB socket (the sidecar's events)
to the sidecar, forwards progress to the server in order (each event once, by ``seq``), and
follows the sidecar's heartbeats with `node.heartbeat` (alive → suspected → failed and back).
A REQ socket (``ping`` → ``pong``) is opened only while a ping is needed — after connecting,
on a gap, when the sidecar stops or its pod does, when it turns suspected — and closed at the
pong (or after ``PING_TIMEOUT`` intervals): the pong's replay fills gaps. Sockets are bounded
(`node.live_sockets`): a run that gets none stays ``unfollowed`` and is retried. Everything it
learns is published on the node's own PUB socket, which ``python -m node monitor`` reads.

Other threads only call the small input methods (``run_status``, ``pod_event``,
``run_finished``): they queue work for the live thread. The node connects to pods; pods never
connect to the node.
"""
from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from typing import Callable

import zmq

from node import live_frames as F
from node.config import LiveConfig
from node.errors import ClusterError
from node.heartbeat import FAILED, SUSPECTED, HeartbeatPolicy, Liveness
from node.live_sockets import FORWARD_RATE, RETRY_SECONDS, LiveRun, Sockets, make_context
from node.manifests import SIDECAR_NAME

log = logging.getLogger(__name__)

LOOP_INTERVAL = 0.05
# Every followed run is looked at (liveness, ping time-outs, drain ends) once per pass: a
# quarter heartbeat interval, at most PASS_MAX. The runs with input, or touched by an input
# method, are handled at once in between. At 5,000 runs a pass every LOOP_INTERVAL was most of
# the live thread's CPU, and a quarter interval is finer than anything a pass decides.
PASS_MAX = 0.25
# After its pod stops running, a sidecar is followed at most this long (or 2 intervals if more)
# for the algorithm's last lines; its "stopped" heartbeat, sent after them, ends this early.
DRAIN_SECONDS = 3.0
# How long `facts` waits for a followed run's final facts (the sidecar sends them when the
# algorithm ended; its pod ends only once the node has them, so they are normally in already).
FACTS_WAIT = DRAIN_SECONDS


def pod_address(pod: dict) -> str | None:
    """The pod IP while the sidecar can answer: the pod is Running, or the sidecar still runs
    after the algorithm ended (the pod is then Succeeded/Failed or being deleted, and the sidecar
    holds the last progress lines until the node fetched them). Else None."""
    status = pod.get("status") or {}
    sidecar_running = any(
        cs.get("name") == SIDECAR_NAME and "running" in (cs.get("state") or {})
        for cs in status.get("initContainerStatuses") or [])
    running = status.get("phase") == "Running" and not pod.get("metadata", {}).get(
        "deletionTimestamp")
    if not (running or sidecar_running):
        return None
    return status.get("podIP") or None


class LiveManager:
    def __init__(self, config: LiveConfig, node_id: str,
                 emit: Callable[[str, dict], bool], *, context: zmq.Context | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.node_id = node_id
        self.emit = emit
        self.clock = clock
        self.policy = HeartbeatPolicy(config.heartbeat_seconds, config.suspect_after,
                                      config.fail_after)
        # an own context unless given one (tests): its MAX_SOCKETS must be set before any socket
        self._own_ctx = context is None
        self.ctx = make_context(config.max_sockets) if context is None else context
        self.sockets = Sockets(self.ctx)
        self.inbox: queue.Queue = queue.Queue()
        self.runs: dict[int, LiveRun] = {}
        self.pub: zmq.Socket | None = None
        self.pub_port: int | None = None
        self.stop_event = threading.Event()
        self.pass_interval = max(LOOP_INTERVAL, min(PASS_MAX, self.policy.interval / 4))
        self._dirty: set[int] = set()  # runs to look at in this turn, not only at the next pass
        # the sidecars' facts (isolation probe, resource use), read by the finishing workers:
        # latest facts per run; runs whose final facts came; runs followed (more may come)
        self._facts: dict[int, dict] = {}
        self._final: set[int] = set()
        self._followed: set[int] = set()
        self._facts_cv = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="live", daemon=True)

    # -- inputs (any thread) ---------------------------------------------------------------
    def run_status(self, run_id: int, task_id: int, status: str) -> None:
        if self.stop_event.is_set():
            return  # stopped (or failed): nothing reads the inbox any more
        self.inbox.put(("status", run_id, task_id, status))

    def pod_event(self, run_id: int, etype: str, pod: dict) -> None:
        name = pod.get("metadata", {}).get("name")
        ip = None if etype == "DELETED" else pod_address(pod)
        if self.stop_event.is_set():
            return
        self.inbox.put(("pod", run_id, name, ip))

    def run_finished(self, run_id: int) -> None:
        if self.stop_event.is_set():
            return
        self.inbox.put(("finished", run_id))

    def facts(self, run_id: int, wait: float = FACTS_WAIT) -> dict | None:
        """What the run's sidecar reported (``{"isolation", "usage"}``, either may be absent),
        or None when nothing came. Waits up to ``wait`` seconds for the final facts of a run
        whose sidecar is still followed; called from the finishing workers."""
        deadline = time.monotonic() + wait
        with self._facts_cv:
            while (run_id in self._followed and run_id not in self._final
                   and not self.stop_event.is_set()):
                left = deadline - time.monotonic()
                if left <= 0:
                    log.debug("run %s: its sidecar's final facts did not come in %gs", run_id,
                              wait)
                    break
                self._facts_cv.wait(min(left, 0.5))  # 0.5: a stop is noticed within that
            found = self._facts.get(run_id)
            return copy.deepcopy(found) if found is not None else None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.linger = 0
        host = self.config.node_pub_host
        try:
            self.pub.bind(f"tcp://{host}:{self.config.node_pub_port or '*'}")
        except zmq.ZMQError as e:
            self.pub.close()
            if self._own_ctx:
                self.ctx.term()
            raise ClusterError(f"live channel: cannot bind the node's PUB socket on "
                               f"{host}:{self.config.node_pub_port}: {e}") from e
        self.pub_port = int(self.pub.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
        log.info("live channel: node events on tcp://%s:%d; up to %d sockets to sidecars",
                 host, self.pub_port, self.sockets.budget)
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    # -- the live thread --------------------------------------------------------------------
    def _loop(self) -> None:
        poller = self.sockets.poller
        next_snapshot = next_retry = next_pass = 0.0
        try:
            while not self.stop_event.is_set():
                self._drain_inbox()
                if poller.sockets:
                    ready = dict(poller.poll(LOOP_INTERVAL * 1000))
                else:  # zmq_poll returns at once with nothing to poll: do not spin
                    self.stop_event.wait(LOOP_INTERVAL)
                    ready = {}
                now = self.clock()
                # the runs with input, or touched by an input method, are handled at once;
                # every run only once per pass (pass_interval): with 1,000 sidecars beating, a
                # pass over all on every wake-up was most of this thread's time
                woken = {id(r): r for r in map(self.sockets.owners.get, ready) if r is not None}
                for run_id in self._dirty:
                    run = self.runs.get(run_id)
                    if run is not None:
                        woken[id(run)] = run
                self._dirty.clear()
                if now >= next_pass:
                    next_pass = now + self.pass_interval
                    due = list(self.runs.values())
                else:
                    due = list(woken.values())
                for run in due:
                    try:
                        if run.sub is not None and ready.get(run.sub):
                            self._read_sub(run)
                        if run.req is not None and ready.get(run.req):
                            self._read_req(run)
                        self._housekeeping(run, now)
                    except zmq.ZMQError as e:  # one pod's sockets must not stop the others
                        log.warning("live channel of run %s: %s", run.run_id, e)
                if now >= next_retry:
                    next_retry = now + RETRY_SECONDS
                    self._retry_unfollowed()
                if now >= next_snapshot:
                    next_snapshot = now + self.policy.interval
                    self._publish(F.NODE_TOPIC, F.SNAPSHOT, {
                        "node_id": self.node_id, "time": time.time(),
                        "runs": [r.view(time.time()) for r in
                                 sorted(self.runs.values(), key=lambda r: r.run_id)]})
        except Exception:
            log.exception("live channel thread failed; live updates stop (runs are unaffected)")
            self.stop_event.set()
        finally:
            for run in list(self.runs.values()):
                self.sockets.unfollow(run)
            if self.pub is not None:
                self.pub.close()
            if self._own_ctx:
                self.ctx.term()  # every socket is closed (linger 0): returns at once

    def _drain_inbox(self) -> None:
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return
            kind, run_id = item[0], item[1]
            self._dirty.add(run_id)  # its pings and drain are due now, not at the next pass
            if kind == "status":
                run = self.runs.setdefault(run_id, LiveRun(run_id))
                run.task_id = item[2]
                if run.status != item[3]:
                    run.status = item[3]
                    self._publish(str(run_id), F.STATE, run.view(time.time()))
            elif kind == "pod":
                name, ip = item[2], item[3]
                if run_id not in self.runs and ip is not None:
                    # a run adopted after a node restart may show its pod before its status
                    self.runs[run_id] = LiveRun(run_id)
                run = self.runs.get(run_id)
                if run is None or run.finished:
                    continue
                if ip is None:
                    if name == run.pod and run.sub is None:  # never followed: nothing to fetch
                        self.sockets.unfollow(run)
                        run.health = "ended"
                        self._facts_over(run.run_id)
                    elif name == run.pod and run.drain_until is None:
                        self._drain(run)
                elif run.ip != ip or run.pod != name:
                    self.sockets.unfollow(run)
                    self._connect(run, name, ip)
            elif kind == "finished":
                run = self.runs.get(run_id)
                if run is None:
                    continue
                run.finished = True
                if run.sub is None:
                    self._forget(run)
                elif run.drain_until is None:
                    self._drain(run)

    def _drain(self, run: LiveRun) -> None:
        run.drain_until = self.clock() + max(DRAIN_SECONDS, 2 * self.policy.interval)
        if not self._complete(run):
            run.want_ping = True  # fetch the last lines

    @staticmethod
    def _complete(run: LiveRun) -> bool:
        """The sidecar stopped and the node has every event it announced then."""
        return run.stopped is not None and run.seq >= run.stopped

    def _connect(self, run: LiveRun, pod: str, ip: str) -> None:
        if not self.sockets.follow(run, pod, ip, self.config.pub_port):
            if run.health != "unfollowed":  # logged once for all runs (live_sockets)
                previous, run.health = run.health, "unfollowed"
                self._publish(str(run.run_id), F.HEALTH,
                              {"state": "unfollowed", "previous": previous, "missed": 0})
            return
        run.drain_until, run.stopped = None, None
        run.liveness = Liveness.start(self.policy, self.clock(),
                                      grace=self.policy.interval * self.policy.suspect_after)
        run.health = "alive"
        with self._facts_cv:
            self._followed.add(run.run_id)
        run.want_ping, run.ping_retry = True, 0.0  # replay what came before the SUB joined
        log.info("run %s: following its sidecar at %s", run.run_id, ip)
        self._publish(str(run.run_id), F.HEALTH, {"state": "alive", "connected": ip})

    def _retry_unfollowed(self) -> None:
        """Follow runs that got no socket, oldest first, while sockets can be had."""
        waiting = sorted((r for r in self.runs.values()
                          if r.sub is None and r.ip is not None and not r.finished),
                         key=lambda r: r.run_id)
        for run in waiting:
            self._connect(run, run.pod, run.ip)
            if run.sub is None:
                break
            self._dirty.add(run.run_id)  # its first ping goes out now
        self.sockets.settle(all_followed=all(r.sub is not None for r in waiting))

    def _forget(self, run: LiveRun) -> None:
        self.sockets.unfollow(run)
        self.runs.pop(run.run_id, None)
        with self._facts_cv:
            self._facts.pop(run.run_id, None)
            self._final.discard(run.run_id)
            self._followed.discard(run.run_id)
            self._facts_cv.notify_all()
        self._publish(str(run.run_id), F.STATE, {**run.view(time.time()), "gone": True})

    def _read_sub(self, run: LiveRun) -> None:
        while run.sub is not None:
            try:
                frames = run.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                rid, kind, body = F.decode(frames)
            except F.FrameError as e:
                log.debug("run %s: bad frame from its sidecar: %s", run.run_id, e)
                continue
            if rid != str(run.run_id):
                continue
            self._beat(run)
            if kind == F.PROGRESS:
                event = F.progress_event(body)
                if event is None:
                    continue
                if event["seq"] > run.seq + 1:
                    run.want_ping = True  # a gap: the pong's replay fills it, in order
                elif event["seq"] == run.seq + 1:
                    self._forward(run, event)
            elif kind == F.HEARTBEAT:
                seq = body.get("seq")
                if isinstance(seq, int) and not isinstance(seq, bool) and seq > run.seq:
                    run.want_ping = True  # events published before the SUB joined, or dropped
                run.stopped = None
                if body.get("state") == "stopped":
                    # sent after its last progress events (same socket, in order); it waits for
                    # a ping that shows the node has them all, then exits
                    run.stopped = seq if isinstance(seq, int) and not isinstance(seq, bool) else 0
                    run.want_ping = True
            elif kind == F.FACTS:
                self._store_facts(run, body)
            elif kind == F.LOG:
                message = body.get("message")
                if isinstance(message, str):
                    self._publish(str(run.run_id), F.LOG,
                                  {"message": message[:F.MAX_MESSAGE_CHARS]})

    def _read_req(self, run: LiveRun) -> None:
        try:
            frames = run.req.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        before = run.seq
        try:
            rid, kind, body = F.decode(frames)
        except F.FrameError as e:
            log.debug("run %s: bad pong: %s", run.run_id, e)
            rid, kind, body = "", "", {}
        if rid == str(run.run_id) and kind == F.PONG:
            self._beat(run)
            events = body.get("progress")
            for raw in events if isinstance(events, list) else []:
                event = F.progress_event(raw) if isinstance(raw, dict) else None
                if event is not None and event["seq"] == run.seq + 1:
                    self._forward(run, event)
            seq = body.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                if seq > run.seq:  # more to replay than one pong carries (if it carried any:
                    run.want_ping = run.seq > before  # a lost history must not loop pings)
                elif run.stopped is None or body.get("state") == "stopped":
                    run.want_ping = False  # it has nothing more: needs met by this pong
            if "facts" in body:
                self._store_facts(run, body["facts"])
        self.sockets.answered(run)

    def _housekeeping(self, run: LiveRun, now: float) -> None:
        if run.drain_until is not None and (
                now >= run.drain_until or (self._complete(run) and not run.want_ping)):
            self.sockets.unfollow(run)
            run.health = "ended"
            self._facts_over(run.run_id)
        if run.finished and run.sub is None:
            self._forget(run)
            return
        self.sockets.pings(run, now, self.config.rep_port, self.policy.interval)
        # a sidecar that said it stopped sends no more heartbeats: silence is then expected
        # until the pod's end reaches the node (at 1,000 runs ending together that took seconds,
        # and most runs were reported unresponsive though nothing was wrong)
        if run.liveness is not None and run.drain_until is None and run.stopped is None:
            changed = run.liveness.tick(now)
            if changed:
                if changed == SUSPECTED:
                    run.want_ping = True  # its SUB may be what is silent: ask before failing
                self._health(run, changed)

    def _store_facts(self, run: LiveRun, body: object) -> None:
        facts = F.facts_body(body)
        if facts is None:
            log.debug("run %s: malformed facts from its sidecar", run.run_id)
            return
        if not facts:
            return
        with self._facts_cv:
            merged = self._facts[run.run_id] = {**self._facts.get(run.run_id, {}), **facts}
            if "usage" in facts:  # sent when the algorithm ended: nothing comes after
                self._final.add(run.run_id)
            self._facts_cv.notify_all()
        self._publish(str(run.run_id), F.FACTS, merged)

    def _facts_over(self, run_id: int) -> None:
        """The run's sidecar is no longer followed: no more facts will come."""
        with self._facts_cv:
            self._followed.discard(run_id)
            self._facts_cv.notify_all()

    def _beat(self, run: LiveRun) -> None:
        if run.liveness is not None:
            changed = run.liveness.beat(self.clock())
            if changed:
                self._health(run, changed)

    def _health(self, run: LiveRun, state: str) -> None:
        previous, run.health = run.health, state
        missed = run.liveness.missed(self.clock()) if run.liveness else 0
        if state == FAILED:
            log.warning("run %s: its sidecar stopped answering (%d heartbeats missed); the run "
                        "is unresponsive", run.run_id, missed)
        else:
            log.info("run %s: sidecar %s (was %s)", run.run_id, state, previous)
        self._publish(str(run.run_id), F.HEALTH,
                      {"state": state, "previous": previous, "missed": missed})

    def _forward(self, run: LiveRun, event: dict) -> None:
        run.seq = event["seq"]
        run.progress, run.message = event["progress"], event["message"]
        self._publish(str(run.run_id), F.PROGRESS, event)
        now = self.clock()
        run.budget = min(FORWARD_RATE, run.budget + (now - run.budget_at) * FORWARD_RATE)
        run.budget_at = now
        if run.budget < 1:
            run.throttled += 1
            if run.throttled == 1:
                log.warning("run %s reports progress faster than %g/s; the server gets only "
                            "that many", run.run_id, FORWARD_RATE)
            return
        run.budget -= 1
        sent = self.emit("algorithm_progress", {
            "node_id": self.node_id, "run_id": run.run_id, "task_id": run.task_id, **event})
        if not sent:
            log.debug("progress %s of run %s not sent: server not connected", event["seq"],
                      run.run_id)

    def _publish(self, topic: str, kind: str, body: dict) -> None:
        if self.pub is None:
            return
        try:
            self.pub.send_multipart(F.encode(topic, kind, body), zmq.NOBLOCK)
        except (zmq.Again, F.FrameError) as e:
            log.debug("node event %s not published: %s", kind, e)


class NoLive:
    """Stands in for LiveManager when the live channel is off."""

    def run_status(self, run_id: int, task_id: int, status: str) -> None:
        pass

    def pod_event(self, run_id: int, etype: str, pod: dict) -> None:
        pass

    def run_finished(self, run_id: int) -> None:
        pass

    def facts(self, run_id: int, wait: float = 0.0) -> dict | None:
        return None
