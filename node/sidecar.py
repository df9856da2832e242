"""The live-channel sidecar of an algorithm pod: ``python -m node.sidecar`` (CONTRACTS §9).

Runs as a native sidecar (an init container with ``restartPolicy: Always``) next to the
algorithm, sharing an emptyDir with it. The algorithm appends JSON lines to ``$PROGRESS_FILE``
in that directory (``algorithms.common.progress``); the sidecar tails the file and

- publishes ``[run_id, "progress", {...,"seq"}]``, ``[run_id, "heartbeat", {...}]`` and
  ``[run_id, "log", {...}]`` on a PUB socket bound to ``$POD_IP:$LIVE_PUB_PORT``;
- answers ``[run_id, "ping", {"after": n}]`` on a REP socket bound to ``$POD_IP:$LIVE_REP_PORT``
  with ``[run_id, "pong", {"state", "seq", "progress": [events after n]}]``, so a node that
  connected late (or missed events: PUB drops them while nobody listens) catches up in order;
- publishes ``[run_id, "facts", {"isolation", "usage"}]``: the outcome of the isolation probe
  (`node.isolation_probe`, run once at start in a thread) and, when the algorithm ended, the
  pod's resource use (`node.cgroup_usage`); every pong carries the latest facts too.

It binds on the pod IP only; the node connects to it. The only connections it opens are the
probe's, which check that the pod cannot reach what it must not (and can reach the proxy).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import zmq

from node import live_frames as F
from node.cgroup_usage import read_usage
from node.isolation_probe import ProbeSettings, not_run, run_probe
from node.stopsignal import StopSignal

log = logging.getLogger("node.sidecar")

DEFAULT_PUB_PORT = 5555
DEFAULT_REP_PORT = 5556
HISTORY = 1000   # progress events kept for late subscribers
TAIL_INTERVAL = 0.05
MAX_READ = 256 * 1024  # bytes read from the progress file per pass


class SidecarError(Exception):
    """Bad settings: the sidecar cannot start."""


@dataclass(frozen=True)
class SidecarSettings:
    run_id: str
    host: str
    pub_port: int = DEFAULT_PUB_PORT
    rep_port: int = DEFAULT_REP_PORT
    progress_file: Path = Path("/app/live/progress")
    heartbeat_seconds: float = 1.0
    # after the algorithm ended: how long to wait for the node to fetch the last progress (a PUB
    # message sent before the node connected is lost; the node's ping catches up). Kept well
    # under the pod's termination grace period (10 s by default)
    drain_seconds: float = 3.0
    # the isolation probe: on by default in a pod (PROBE_ISOLATION), off when built in code
    # (tests, the local cluster's fake runtime, which has no pod network to probe)
    isolation_probe: bool = False
    probe: ProbeSettings = field(default_factory=ProbeSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "SidecarSettings":
        problems = []
        run_id = env.get("RUN_ID", "")
        if not run_id.isdigit() or len(run_id) > 16:
            problems.append(f"RUN_ID must be a run id, got {run_id[:20]!r}")
        host = env.get("POD_IP", "")
        if not host:
            problems.append("POD_IP is not set (give it from the downward API: status.podIP)")

        def number(name: str, default: float, kind=int):
            text = env.get(name)
            if text is None:
                return default
            try:
                value = kind(text)
            except ValueError:
                problems.append(f"{name} must be a number, got {text[:20]!r}")
                return default
            if value < 0 or (kind is int and value > 65535):
                problems.append(f"{name} is out of range: {value}")
            return value
        pub = number("LIVE_PUB_PORT", DEFAULT_PUB_PORT)
        rep = number("LIVE_REP_PORT", DEFAULT_REP_PORT)
        beat = number("LIVE_HEARTBEAT_SECONDS", 1.0, float)
        if beat <= 0:
            problems.append("LIVE_HEARTBEAT_SECONDS must be positive")
        drain = number("LIVE_DRAIN_SECONDS", cls.drain_seconds, float)
        progress = env.get("PROGRESS_FILE") or "/app/live/progress"
        probing = env.get("PROBE_ISOLATION", "1")
        if probing not in ("0", "1"):
            problems.append(f"PROBE_ISOLATION must be 1 or 0, got {probing[:20]!r}")
        if problems:
            raise SidecarError("; ".join(problems))
        return cls(run_id=run_id, host=host, pub_port=pub, rep_port=rep,
                   progress_file=Path(progress), heartbeat_seconds=beat, drain_seconds=drain,
                   isolation_probe=probing == "1", probe=ProbeSettings.from_env(env))


class ProgressTail:
    """Reads complete new lines appended to a file that may not exist yet."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.skipping = False  # inside an over-long line: drop until its newline

    def read_lines(self) -> list[bytes]:
        try:
            with open(self.path, "rb") as f:
                if os.fstat(f.fileno()).st_size < self.offset:  # truncated: start over
                    self.offset, self.partial, self.skipping = 0, b"", False
                f.seek(self.offset)
                data = f.read(MAX_READ)
        except FileNotFoundError:
            return []
        except OSError as e:
            log.warning("cannot read %s: %s", self.path, e)
            return []
        self.offset += len(data)
        *complete, rest = (self.partial + data).split(b"\n")
        lines = []
        for piece in complete:
            if self.skipping:
                self.skipping = False
                continue
            lines.append(piece)
        if len(rest) > F.MAX_LINE_BYTES:
            self.skipping, rest = True, b""
        self.partial = rest
        return lines


class Sidecar:
    def __init__(self, settings: SidecarSettings, context: zmq.Context | None = None, *,
                 probe: Callable[[ProbeSettings], dict] = run_probe,
                 usage: Callable[[], dict] = read_usage) -> None:
        self.s = settings
        self.probe, self.usage = probe, usage
        # facts: the latest {"isolation", "usage"}; the probe thread hands its outcome over
        # through _probe_result (the sockets belong to the sidecar's own thread)
        self.facts: dict[str, Any] = {}
        self.facts_fetched = False  # a pong after begin_stop carried the final facts
        self._final_facts_matter = False
        self._lock = threading.Lock()
        self._probe_thread: threading.Thread | None = None
        self._probe_result: dict | None = None
        self.ctx = context or zmq.Context.instance()
        self.tail = ProgressTail(settings.progress_file)
        self.history: deque[dict] = deque(maxlen=HISTORY)
        self.seq = 0
        self.delivered = 0  # the node has every progress event up to this seq (sent by pong)
        self.beats = 0
        self.state = "running"
        self.started = time.monotonic()
        self.pub = self.ctx.socket(zmq.PUB)
        self.rep = self.ctx.socket(zmq.REP)
        for sock in (self.pub, self.rep):
            sock.linger = 200  # the last heartbeat may still go out on stop
            sock.setsockopt(zmq.MAXMSGSIZE, F.MAX_FRAME_BYTES)
            if ":" in settings.host:
                sock.ipv6 = True
        try:
            self.pub_port = self._bind(self.pub, settings.pub_port)
            self.rep_port = self._bind(self.rep, settings.rep_port)
        except zmq.ZMQError as e:
            self.close()
            raise SidecarError(f"cannot bind on {settings.host}: {e}") from e

    def _bind(self, sock: zmq.Socket, port: int) -> int:
        host = f"[{self.s.host}]" if ":" in self.s.host else self.s.host
        sock.bind(f"tcp://{host}:{port or '*'}")
        return int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])

    def close(self) -> None:
        self.pub.close()
        self.rep.close()

    # -- events --------------------------------------------------------------------------
    def _publish(self, kind: str, body: dict) -> None:
        try:
            self.pub.send_multipart(F.encode(self.s.run_id, kind, body), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # PUB never blocks; a slow subscriber loses events and catches up by ping

    def heartbeat(self) -> None:
        self.beats += 1
        self._publish(F.HEARTBEAT, {"state": self.state, "seq": self.seq, "beats": self.beats,
                                    "uptime": round(time.monotonic() - self.started, 3)})

    def poll_progress(self) -> int:
        """Publish the progress lines appended since the last pass; returns how many."""
        n = 0
        for line in self.tail.read_lines():
            event = F.parse_progress_line(line)
            if event is None:
                self._publish(F.LOG, {"level": "warning",
                                      "message": "skipped a line of the progress file that is "
                                                 "not a JSON progress report"})
                continue
            self.seq += 1
            event = {"seq": self.seq, **event}
            self.history.append(event)
            self._publish(F.PROGRESS, event)
            n += 1
        return n

    def answer(self, frames: list[bytes]) -> list[bytes]:
        try:
            run_id, kind, body = F.decode(frames)
        except F.FrameError as e:
            return F.encode(self.s.run_id, F.ERROR, {"error": str(e)[:200]})
        if run_id != self.s.run_id:
            return F.encode(self.s.run_id, F.ERROR, {"error": "wrong run id"})
        if kind != F.PING:
            return F.encode(self.s.run_id, F.ERROR, {"error": f"unknown request {kind[:32]!r}"})
        after = body.get("after", 0)
        if isinstance(after, bool) or not isinstance(after, int):
            after = 0
        missing = [e for e in self.history if e["seq"] > after][:F.MAX_REPLAY]
        self.delivered = max(self.delivered, missing[-1]["seq"] if missing else after)
        if self.state == "stopped":
            self.facts_fetched = True
        return F.encode(self.s.run_id, F.PONG, {
            "state": self.state, "seq": self.seq, "beats": self.beats,
            "uptime": round(time.monotonic() - self.started, 3), "progress": missing,
            "facts": self.facts})

    # -- facts -----------------------------------------------------------------------------
    def start_probe(self) -> None:
        """Start the isolation probe in a thread: it must not delay binding or beats."""
        if not self.s.isolation_probe:
            self.set_isolation(not_run("turned off (live.isolation_probe: false)"))
            return
        self._probe_thread = threading.Thread(target=self._run_probe, name="isolation-probe",
                                              daemon=True)
        self._probe_thread.start()

    def _run_probe(self) -> None:
        try:
            result = self.probe(self.s.probe)
        except Exception as e:  # a probe bug must not end the live channel
            log.exception("run %s: the isolation probe failed", self.s.run_id)
            result = {"outcome": "failed", "checks": [],
                      "detail": f"the probe failed: {type(e).__name__}"}
        with self._lock:
            self._probe_result = result

    @property
    def probe_pending(self) -> bool:
        """The probe runs, or its outcome was not published yet."""
        with self._lock:
            waiting = self._probe_result is not None
        return waiting or (self._probe_thread is not None and self._probe_thread.is_alive())

    def poll_facts(self) -> bool:
        """Publish the probe's outcome once it is there; True when it was published now."""
        with self._lock:
            result, self._probe_result = self._probe_result, None
        if result is None:
            return False
        self._log_outcome(result)
        self.set_isolation(result)
        return True

    def _log_outcome(self, result: dict) -> None:
        failed = [f"{c['name']} ({c['detail']})" for c in result.get("checks", []) if not c["ok"]]
        if result.get("outcome") == "passed":
            log.info("run %s: isolation probe passed in %ss", self.s.run_id, result.get("seconds"))
        else:
            log.warning("run %s: isolation probe %s: %s", self.s.run_id, result.get("outcome"),
                        "; ".join(failed) or result.get("detail", ""))

    def set_isolation(self, isolation: dict) -> None:
        self.facts = {**self.facts, "isolation": isolation}
        self._publish_facts()

    def _publish_facts(self) -> None:
        try:
            self._publish(F.FACTS, self.facts)
        except F.FrameError as e:  # bounded by the probe's limits: not expected
            log.warning("run %s: facts not published: %s", self.s.run_id, e)

    # -- loop ------------------------------------------------------------------------------
    # run() is the sidecar of one pod; the steps are public for the local cluster's fake
    # runtime, which hosts many sidecars in one loop (localcluster.runtime.fake_sidecars)
    def announce(self) -> None:
        self._publish(F.LOG, {"level": "info", "message": "sidecar started"})

    def begin_stop(self) -> None:
        """The algorithm ended: its last lines go out, then the final facts (with the pod's
        resource use), then the "stopped" heartbeat."""
        self.poll_progress()
        self.poll_facts()
        self.state = "stopped"
        facts = dict(self.facts)
        if self.probe_pending or "isolation" not in facts:
            facts["isolation"] = {"outcome": "unfinished", "checks": [],
                                  "detail": "the algorithm ended before the probe finished"}
        facts["usage"] = self.usage()
        self.facts = facts
        # facts with nothing measured in them are not worth holding the pod's end for
        self._final_facts_matter = (facts["isolation"]["outcome"] in ("passed", "failed")
                                    or facts["usage"].get("available") is True)
        self._publish_facts()
        self.heartbeat()

    @property
    def drained(self) -> bool:
        """The node has fetched every progress event, and the final facts if they matter."""
        return self.delivered >= self.seq and (self.facts_fetched or
                                               not self._final_facts_matter)

    def serve_ready(self) -> None:
        """Answer the ping waiting on the REP socket, if there is one."""
        try:
            frames = self.rep.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        self.rep.send_multipart(self.answer(frames))

    def run(self, stop: "threading.Event | StopSignal") -> None:
        self.announce()
        self.start_probe()
        poller = zmq.Poller()
        poller.register(self.rep, zmq.POLLIN)
        # a stop request wakes the poll at once (pyzmq resumes a poll a signal interrupted)
        wake = stop.fileno() if hasattr(stop, "fileno") else None
        if wake is not None:
            poller.register(wake, zmq.POLLIN)
        next_beat = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                self.heartbeat()
                next_beat = now + self.s.heartbeat_seconds
            self.poll_progress()
            self.poll_facts()
            timeout = max(0.0, min(TAIL_INTERVAL, next_beat - time.monotonic()))
            self._serve(poller, timeout)
        # the algorithm ended (the kubelet stops sidecars after the main containers): the last
        # lines it wrote still go out, and the sidecar answers pings until the node has them
        # all (a fast algorithm may end before the node ever connected) or drain_seconds pass
        if wake is not None:
            poller.unregister(wake)  # readable from now on: the drain must not spin on it
        deadline = time.monotonic() + self.s.drain_seconds
        # a fast algorithm may end before the probe did: its outcome belongs in the final
        # facts, so wait for it (the probe is bounded to about 2 s) within the drain time
        while self.probe_pending and (left := deadline - time.monotonic()) > 0:
            self.poll_facts()
            self._serve(poller, min(TAIL_INTERVAL, left))
        self.begin_stop()
        while not self.drained and (left := deadline - time.monotonic()) > 0:
            self.poll_facts()  # an outcome that came too late for begin_stop still goes out
            self._serve(poller, min(TAIL_INTERVAL, left))
        if self.delivered < self.seq:
            log.warning("run %s: stopping with progress events %d..%d not fetched by the node",
                        self.s.run_id, self.delivered + 1, self.seq)
        elif not self.drained:
            log.info("run %s: stopping; the node did not fetch the final facts", self.s.run_id)

    def _serve(self, poller: zmq.Poller, timeout: float) -> None:
        """Answer one ping if one comes within timeout seconds."""
        if dict(poller.poll(timeout * 1000)).get(self.rep):
            self.serve_ready()


def main(argv: list[str] | None = None) -> int:
    if argv:
        print("usage: python -m node.sidecar (settings from the environment: RUN_ID, POD_IP, "
              "LIVE_PUB_PORT, LIVE_REP_PORT, LIVE_HEARTBEAT_SECONDS, PROGRESS_FILE, "
              "PROXY_HOST, PROXY_PORT, PROBE_BLOCKED, PROBE_DNS_NAME, PROBE_ISOLATION)",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = StopSignal().install(signal.SIGTERM, signal.SIGINT)
    try:
        settings = SidecarSettings.from_env(os.environ)
        sidecar = Sidecar(settings)
    except SidecarError as e:
        log.error("cannot start: %s", e)
        return 2
    log.info("run %s: live channel on %s (pub %d, rep %d)", settings.run_id, settings.host,
             sidecar.pub_port, sidecar.rep_port)
    try:
        sidecar.run(stop)
    finally:
        sidecar.close()
        # waits (up to the sockets' linger) until the last events are on the wire: exiting
        # with them still queued would lose the algorithm's final progress
        sidecar.ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
