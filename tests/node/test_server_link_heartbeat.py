"""The node's heartbeats to the server (node/server_link.py, CONTRACTS §2): a server whose
transport still answers Socket.IO's pings but whose application stopped acknowledging beats
(half-open) makes the node hang up and reconnect; a merely late server is only suspected."""
from __future__ import annotations

import asyncio
import logging
import threading

import pytest
import socketio
from aiohttp import web

from dummy_server.testing import wait_until
from node.heartbeat import ALIVE, SUSPECTED, HeartbeatPolicy
from node.server_link import ServerLink

KEY = "test-node-a-key"


class StallingServer:
    """A Socket.IO server on its own thread and loop that acknowledges ``node_heartbeat`` until
    ``stall()``; stalled beats stay unanswered until ``resume()`` (then they are answered late)."""

    def __init__(self):
        self.connects: list[str] = []
        self.disconnects: list[str] = []
        self.beats: list[tuple[str, dict]] = []
        self.acked: list[str] = []
        self.results: list[int] = []  # run ids of run_result events, as they came
        self.expected_interval = 0.1  # what the server tells nodes it expects
        self.port: int | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        name="stalling-server")
        self._gate: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "StallingServer":
        self._thread.start()
        assert self._ready.wait(10), "the test server did not start"
        return self

    def stall(self) -> None:
        self._loop.call_soon_threadsafe(self._set_gate, asyncio.Event())

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._set_gate, None)

    def _set_gate(self, gate: asyncio.Event | None) -> None:
        if self._gate is not None:
            self._gate.set()
        self._gate = gate

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def acked_on(self, sid: str) -> int:
        return self.acked.count(sid)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)
        app = web.Application()
        sio.attach(app)

        @sio.event
        async def connect(sid, environ, auth=None):
            if auth != {"api_key": KEY}:
                raise socketio.exceptions.ConnectionRefusedError("invalid api key")
            self.connects.append(sid)

        @sio.event
        async def disconnect(sid, *_reason):
            self.disconnects.append(sid)

        @sio.on("node_heartbeat")
        async def beat(sid, data=None):
            self.beats.append((sid, data))
            gate = self._gate
            if gate is not None:
                await gate.wait()
            self.acked.append(sid)
            return {"ok": True, "state": "alive", "interval_seconds": self.expected_interval}

        @sio.on("run_result")
        async def result(sid, data):
            self.results.append(data["run_id"])
            gate = self._gate
            if gate is not None:
                await gate.wait()
            return {"ok": True, "run_id": data["run_id"]}

        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        await self._stop.wait()
        self._set_gate(None)
        for sid in self.connects:
            if sid not in self.disconnects:
                await sio.disconnect(sid)
        await sio.shutdown()
        await runner.cleanup()


@pytest.fixture
def server():
    srv = StallingServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def link_to(server):
    links: list[ServerLink] = []

    def make(policy: HeartbeatPolicy) -> ServerLink:
        link = ServerLink(server.url, KEY, "node-a", on_command=lambda data: None,
                          on_kill=lambda data: {}, stop=threading.Event(), heartbeat=policy,
                          runs_active=lambda: 3)
        links.append(link)
        link.start()
        return link

    yield make
    for link in links:
        link.close()


def _messages(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "node.server_link" and text in r.getMessage()]


def test_a_server_that_stops_acknowledging_makes_the_node_reconnect(server, link_to, caplog):
    caplog.set_level(logging.INFO, logger="node.server_link")
    link = link_to(HeartbeatPolicy(interval=0.1, suspect_after=3, fail_after=10))
    # more beats acknowledged than fail_after: a server that answers keeps the session
    wait_until(lambda: len(server.acked) >= 15, what="15 acknowledged beats")
    assert len(server.connects) == 1 and link.server_state == ALIVE
    first = server.connects[0]
    sid, payload = server.beats[0]
    assert sid == first and set(payload) == {"sent_at", "runs_active", "version"}
    assert payload["runs_active"] == 3

    server.stall()   # the transport still answers pings: Socket.IO alone would stay connected
    wait_until(lambda: len(server.connects) == 2, timeout=20, what="the node to reconnect")
    assert server.disconnects[0] == first     # the node hung up the stalled session itself
    assert len(_messages(caplog, "suspecting it")) == 1
    dropped = _messages(caplog, "dropping it and reconnecting")
    assert len(dropped) == 1 and "although the connection looks open" in dropped[0]

    server.resume()
    second = server.connects[1]
    wait_until(lambda: server.acked_on(second) >= 2 and link.connected.is_set(),
               what="beats acknowledged on the new session")
    assert link.server_state == ALIVE


def test_a_late_server_is_only_suspected_and_recovers_without_a_reconnect(server, link_to, caplog):
    caplog.set_level(logging.INFO, logger="node.server_link")
    link = link_to(HeartbeatPolicy(interval=0.1, suspect_after=3, fail_after=100))
    wait_until(lambda: len(server.acked) >= 2, what="acknowledged beats")
    server.stall()
    wait_until(lambda: link.server_state == SUSPECTED, what="the server suspected")
    server.resume()   # the stalled beats are answered now, late
    wait_until(lambda: link.server_state == ALIVE, what="the server alive again")
    assert len(server.connects) == 1 and not server.disconnects
    assert len(_messages(caplog, "suspecting it")) == 1
    assert len(_messages(caplog, "acknowledges heartbeats again")) == 1
    assert _messages(caplog, "reconnecting") == []


def test_a_node_beating_slower_than_the_server_expects_is_warned_once(server, link_to, caplog):
    caplog.set_level(logging.INFO, logger="node.server_link")
    server.expected_interval = 0.05
    link_to(HeartbeatPolicy(interval=0.1, suspect_after=3, fail_after=100))
    wait_until(lambda: _messages(caplog, "expects a beat every"), what="the warning")
    seen = len(server.beats)
    # three more beats, answered at once: the node has handled more answers by now
    wait_until(lambda: len(server.acked) >= seen + 3, what="three more answered beats")
    assert len(_messages(caplog, "expects a beat every 0.05s")) == 1
