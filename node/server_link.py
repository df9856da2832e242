"""The node's Socket.IO link to the central server (protocol: docs/CONTRACTS.md §2).

Inbound events are handed to callbacks at once; nothing here knows about Kubernetes. Connecting
and reconnecting follow the node's retry policy (back-off with jitter).

While connected the node sends ``node_heartbeat`` every interval and follows the server's
acknowledgements with the heartbeat state machine (``node/heartbeat.py``). Socket.IO's own pings
keep a connection "connected" as long as the transport answers, even when the server's
application no longer handles events (a stalled server, a half-open proxy); when no beat has been
acknowledged for ``fail_after`` intervals the node drops the connection and reconnects.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Callable

import socketio

from node import __version__ as VERSION
from node import retry
from node.errors import ServerLinkError
from node.heartbeat import ALIVE, FAILED, SUSPECTED, HeartbeatPolicy, Liveness

log = logging.getLogger(__name__)

# Until the node configuration has its own setting (CONTRACTS §2: 5 s, 3 and 6 beats).
SERVER_HEARTBEAT = HeartbeatPolicy(interval=5.0, suspect_after=3, fail_after=6)
# How often the session's state is looked at between beats: its disconnect callback may never come.
POLL_SECONDS = 0.5


class ServerLink:
    """One Socket.IO session at a time, re-established by our own loop.

    python-socketio's built-in reconnection is off: a failure inside its disconnect handling
    (seen as "dictionary changed size during iteration" when the server goes away mid-call) can
    leave a client that never reconnects. A fresh client per session, supervised here with the
    node's retry policy, always comes back.
    """

    def __init__(self, url: str, api_key: str, node_id: str, *,
                 on_command: Callable[[Any], None],
                 on_kill: Callable[[Any], dict],
                 on_explain: Callable[[Any], dict] | None = None,
                 on_connected: Callable[[], None] = lambda: None,
                 stop: threading.Event,
                 heartbeat: HeartbeatPolicy = SERVER_HEARTBEAT,
                 runs_active: Callable[[], int] = lambda: 0,
                 clock: Callable[[], float] = time.monotonic):
        self.url = url
        self._api_key = api_key
        self.node_id = node_id
        self.stop_event = stop
        self.connected = threading.Event()
        self._on_command = on_command
        self._on_kill = on_kill
        self._on_explain = on_explain
        self._on_connected = on_connected
        self._lost = threading.Event()
        self.sio: socketio.Client | None = None
        self._thread: threading.Thread | None = None
        self._policy = heartbeat
        self._runs_active = runs_active
        self._clock = clock
        self._beat_lock = threading.Lock()  # acks arrive on the client's reader thread
        self._liveness: Liveness | None = None
        self._slow_warned = False

    @property
    def server_state(self) -> str | None:
        """The server's liveness as the heartbeats show it; None while not connected."""
        liveness = self._liveness
        return None if liveness is None else liveness.state

    def _new_client(self) -> socketio.Client:
        sio = socketio.Client(reconnection=False, handle_sigint=False)

        @sio.event
        def connect():
            log.info("connected to server %s", self.url)
            self.connected.set()
            sio.emit("node_connection_request", {"node_id": self.node_id, "version": VERSION})
            self._on_connected()

        @sio.event
        def connect_error(data):
            log.warning("server %s refused or failed the connection: %s", self.url, data)

        @sio.event
        def disconnect(*_reason):
            if sio is self.sio:  # a late callback of an earlier client says nothing about this one
                self.connected.clear()
                self._lost.set()

        sio.on("command", self._on_command)
        sio.on("kill_task", self._on_kill)
        if self._on_explain is not None:
            sio.on("explain_task", self._on_explain)
        return sio

    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name="server-link", daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        delays = retry.FOREVER.delays()
        while not self.stop_event.is_set():
            sio = self.sio = self._new_client()
            try:
                sio.connect(self.url, auth={"api_key": self._api_key},
                            transports=["websocket"], wait_timeout=10)
            except (socketio.exceptions.ConnectionError, ValueError) as e:
                delay = next(delays)
                log.warning("cannot connect to server %s (%s); retrying in %.1fs",
                            self.url, e, delay)
                self._close(sio)
                if self.stop_event.wait(delay):
                    return
                continue
            delays = retry.FOREVER.delays()
            unresponsive = self._keep_alive(sio)
            self._liveness = None
            self.connected.clear()
            self._close(sio)  # also hangs up a session the server may still think alive
            self._lost.clear()  # set by that hang-up; left set, the next session's waits would spin
            if not self.stop_event.is_set():
                if not unresponsive:
                    log.warning("disconnected from server %s; reconnecting", self.url)
                self.stop_event.wait(next(delays))

    def _keep_alive(self, sio: socketio.Client) -> bool:
        """Beat while the session lasts. True when it ends because the server stopped answering."""
        interval = self._policy.interval
        liveness = self._liveness = Liveness.start(self._policy, self._clock())
        next_beat = self._clock()
        while not self.stop_event.is_set() and sio.connected and sio.eio.state == "connected":
            now = self._clock()
            if now >= next_beat:
                self._beat(sio, liveness)
                next_beat = now + interval
            with self._beat_lock:
                change = liveness.tick(now)
            if change == SUSPECTED:
                log.warning("server %s has not acknowledged %d heartbeats; suspecting it",
                            self.url, liveness.missed(now))
            elif change == FAILED:
                log.warning("server %s has not acknowledged %d heartbeats although the connection "
                            "looks open; dropping it and reconnecting", self.url,
                            liveness.missed(now))
                return True
            self._lost.wait(min(POLL_SECONDS, max(0.0, next_beat - self._clock())))
        return False

    def _beat(self, sio: socketio.Client, liveness: Liveness) -> None:
        payload = {"sent_at": time.time(), "runs_active": self._runs_active(), "version": VERSION}
        try:
            sio.emit("node_heartbeat", payload, callback=functools.partial(self._acked, liveness))
        except socketio.exceptions.SocketIOError as e:
            log.debug("heartbeat not sent: %s", e)  # the session is ending; the loop notices

    def _acked(self, liveness: Liveness, *answer: Any) -> None:
        """Any answer is a sign of life; an ack of an earlier session updates only that one."""
        with self._beat_lock:
            change = liveness.beat(self._clock())
        if change == ALIVE and liveness is self._liveness:
            log.info("server %s acknowledges heartbeats again", self.url)
        expected = answer[0].get("interval_seconds") if answer and isinstance(answer[0], dict) \
            else None
        if isinstance(expected, (int, float)) and expected < self._policy.interval \
                and not self._slow_warned:
            self._slow_warned = True  # once: it is a setting, it will not change by itself
            log.warning("this node beats every %gs but server %s expects a beat every %gs: it "
                        "will see the node as suspected or offline; lower the node's interval",
                        self._policy.interval, self.url, expected)

    @staticmethod
    def _close(sio: socketio.Client) -> None:
        try:
            sio.disconnect()
        except Exception:  # already down, in whatever state the library left it
            pass

    def emit(self, event: str, data: dict) -> bool:
        """Fire and forget. False when not connected (the caller decides whether that matters)."""
        sio = self.sio
        if sio is None or not self.connected.is_set():
            return False
        try:
            sio.emit(event, data)
            return True
        except socketio.exceptions.SocketIOError as e:
            log.warning("emit %s failed: %s", event, e)
            return False

    def call(self, event: str, data: dict, timeout: float = 10) -> Any:
        """Emit and wait for the server's acknowledgement."""
        sio = self.sio
        if sio is None or not self.connected.is_set():
            raise ServerLinkError("not connected to the server")
        try:
            return sio.call(event, data, timeout=timeout)
        except socketio.exceptions.SocketIOError as e:
            raise ServerLinkError(f"{event} not acknowledged: {e}") from e

    def call_many(self, event: str, items: list[dict], timeout: float = 10,
                  window: int = 64) -> list[Any]:
        """Emit each item and wait for every acknowledgement, with up to `window` unanswered at
        once (one round trip per result made 1,000 results take 4 s). Returns, per item, its
        acknowledgement or a ServerLinkError: not connected, the emit failed, or no answer came
        for `timeout` seconds (a late answer is dropped; the caller sends the item again)."""
        sio = self.sio
        if sio is None or not self.connected.is_set():
            raise ServerLinkError("not connected to the server")
        answers: list[Any] = [None] * len(items)
        answered = [False] * len(items)
        cond = threading.Condition()
        waiting = 0

        def acked(i: int, *args: Any) -> None:
            nonlocal waiting
            with cond:
                if not answered[i]:
                    answered[i], answers[i] = True, args[0] if args else None
                    waiting -= 1
                    cond.notify_all()

        def wait_until(pred) -> bool:
            # the deadline moves on with every answer: a slow but working server is waited for
            deadline, seen = time.monotonic() + timeout, sum(answered)
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                cond.wait(left)
                if sum(answered) != seen:
                    deadline, seen = time.monotonic() + timeout, sum(answered)
            return True

        sent = 0
        for i, item in enumerate(items):
            with cond:
                if not wait_until(lambda: waiting < window):
                    break
                waiting += 1
            try:
                sio.emit(event, item, callback=lambda *a, i=i: acked(i, *a))
            except socketio.exceptions.SocketIOError as e:
                with cond:
                    answered[i], answers[i] = True, ServerLinkError(f"{event} not sent: {e}")
                    waiting -= 1
                break
            sent = i + 1
        with cond:
            wait_until(lambda: waiting == 0)
            for i in range(len(items)):
                if not answered[i]:
                    answered[i] = True  # a late acknowledgement is ignored
                    answers[i] = ServerLinkError(
                        f"{event} not acknowledged within {timeout:g} s" if i < sent
                        else f"{event} not sent: an earlier one failed")
        return answers

    def close(self) -> None:
        self.stop_event.set()
        self._lost.set()
        if self._thread:
            self._thread.join(timeout=15)
