"""The node's Socket.IO link to the central server (protocol: docs/CONTRACTS.md §2).

Inbound events are handed to callbacks at once; nothing here knows about Kubernetes. Connecting
and reconnecting follow the node's retry policy (back-off with jitter).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import socketio

from node import retry
from node.errors import ServerLinkError

log = logging.getLogger(__name__)

VERSION = "0.1.0"


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
                 on_connected: Callable[[], None] = lambda: None,
                 stop: threading.Event):
        self.url = url
        self._api_key = api_key
        self.node_id = node_id
        self.stop_event = stop
        self.connected = threading.Event()
        self._on_command = on_command
        self._on_kill = on_kill
        self._on_connected = on_connected
        self._lost = threading.Event()
        self.sio: socketio.Client | None = None
        self._thread: threading.Thread | None = None

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
            self.connected.clear()
            self._lost.set()

        sio.on("command", self._on_command)
        sio.on("kill_task", self._on_kill)
        return sio

    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name="server-link", daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        delays = retry.FOREVER.delays()
        while not self.stop_event.is_set():
            sio = self._new_client()
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
            self.sio = sio
            delays = retry.FOREVER.delays()
            # also poll the client's own state: its disconnect callback may never come
            while not self.stop_event.is_set() and sio.connected \
                    and sio.eio.state == "connected":
                self._lost.wait(0.5)
            self._lost.clear()
            self.connected.clear()
            if not self.stop_event.is_set():
                log.warning("disconnected from server %s; reconnecting", self.url)
                self.stop_event.wait(next(delays))
            self._close(sio)

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

    def close(self) -> None:
        self.stop_event.set()
        self._lost.set()
        if self._thread:
            self._thread.join(timeout=15)
