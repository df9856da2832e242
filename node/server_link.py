"""The node's Socket.IO link to the central server (protocol: docs/CONTRACTS.md §2).

Inbound events are handed to callbacks at once; nothing here knows about Kubernetes. The initial
connection is retried with the node's retry policy; afterwards python-socketio reconnects by
itself with back-off and jitter.
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
        self.sio = socketio.Client(reconnection=True, reconnection_delay=0.5,
                                   reconnection_delay_max=10, randomization_factor=0.5,
                                   handle_sigint=False)
        self._on_connected = on_connected
        self._thread: threading.Thread | None = None

        @self.sio.event
        def connect():
            log.info("connected to server %s", self.url)
            self.connected.set()
            self.sio.emit("node_connection_request", {"node_id": node_id, "version": VERSION})
            on_connected()

        @self.sio.event
        def connect_error(data):
            self.connected.clear()
            log.warning("server %s refused or failed the connection: %s", self.url, data)

        @self.sio.event
        def disconnect(*_reason):
            self.connected.clear()
            log.warning("disconnected from server %s", self.url)

        @self.sio.on("command")
        def command(data):
            on_command(data)

        @self.sio.on("kill_task")
        def kill_task(data):
            return on_kill(data)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._connect_loop, name="server-connect",
                                        daemon=True)
        self._thread.start()

    def _connect_loop(self) -> None:
        delays = retry.FOREVER.delays()
        while not self.stop_event.is_set():
            try:
                self.sio.connect(self.url, auth={"api_key": self._api_key},
                                 transports=["websocket"], wait_timeout=10)
                return
            except socketio.exceptions.ConnectionError as e:
                delay = next(delays)
                log.warning("cannot connect to server %s (%s); retrying in %.1fs",
                            self.url, e, delay)
                if self.stop_event.wait(delay):
                    return
            except ValueError:  # "Client is not in a disconnected state": reconnect won the race
                return

    def emit(self, event: str, data: dict) -> bool:
        """Fire and forget. False when not connected (the caller decides whether that matters)."""
        if not self.connected.is_set():
            return False
        try:
            self.sio.emit(event, data)
            return True
        except socketio.exceptions.SocketIOError as e:
            log.warning("emit %s failed: %s", event, e)
            return False

    def call(self, event: str, data: dict, timeout: float = 10) -> Any:
        """Emit and wait for the server's acknowledgement."""
        if not self.connected.is_set():
            raise ServerLinkError("not connected to the server")
        try:
            return self.sio.call(event, data, timeout=timeout)
        except socketio.exceptions.SocketIOError as e:
            raise ServerLinkError(f"{event} not acknowledged: {e}") from e

    def close(self) -> None:
        self.stop_event.set()
        try:
            self.sio.disconnect()
        except Exception:  # already closed
            pass
        if self._thread:
            self._thread.join(timeout=15)
        # the client's reconnect task may still be waiting between attempts
        self.sio.shutdown() if hasattr(self.sio, "shutdown") else None
