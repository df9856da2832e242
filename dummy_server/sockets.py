"""Socket.IO handlers: node and researcher connections (CONTRACTS §2), a thin shell over Service."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import socketio

from .errors import ServerError
from .group_commit import GroupCommit
from .service import RESEARCHERS_ROOM, Message, Service, node_room, researcher_room
from .validation import is_id

log = logging.getLogger(__name__)
NAMESPACE = "/"
# The checker wakes at the next moment a node's state can change; this floor keeps a deadline
# that floating point puts a hair early from turning into a tight loop.
MIN_CHECK_SECONDS = 0.01


class SocketHandlers:
    def __init__(self, sio: socketio.AsyncServer, service: Service):
        self.sio = sio
        self.service = service
        self.peers: dict[str, tuple[str, str]] = {}  # sid -> ("node"|"researcher", id)
        self._wake = asyncio.Event()
        # results and status changes that arrive together share one commit (one fsync)
        self.commits = GroupCommit(service.store)
        for name in ("connect", "disconnect", "node_connection_request", "algorithm_status_change",
                     "run_result", "command_rejected", "command_request", "algorithm_progress",
                     "node_heartbeat"):
            sio.on(name, getattr(self, "on_" + name))
        sio.on("*", self.on_unknown_event)
        # python-socketio logs an undecodable packet (bad JSON, nested past the recursion
        # limit) as an error deep inside engineio and answers nothing: wrap its message
        # handler so the sender hears about it (CONTRACTS §2 protocol_error)
        self._decode = sio._handle_eio_message
        sio.eio.on("message", self._on_eio_message)

    async def _on_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await self._decode(eio_sid, data)
        except (ValueError, TypeError, RecursionError) as e:
            sid = self.sio.manager.sid_from_eio_sid(eio_sid, NAMESPACE)
            size = len(data) if isinstance(data, (str, bytes)) else None
            log.warning("undecodable packet from %s (%s bytes): %s", sid, size,
                        type(e).__name__)
            if sid is not None:
                await self.sio.emit("protocol_error",
                                    {"event": None, "error": "packet could not be decoded"},
                                    to=sid)

    async def on_unknown_event(self, event: str, sid: str, *_data: Any) -> dict:
        """Any event without a handler: answered (ack and protocol_error), never dropped."""
        name = str(event)[:64]  # the name only: payloads may hold data or tokens
        log.warning("unknown event %r from %s", name, sid)
        error = f"unknown event {name!r}"
        await self.sio.emit("protocol_error", {"event": name, "error": error}, to=sid)
        return {"ok": False, "error": error}

    async def presence_checker(self, _app: Any = None):
        """aiohttp cleanup context: one task that moves nodes by their silence (CONTRACTS §2)."""
        task = asyncio.create_task(self._check_presence(), name="presence-checker")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _check_presence(self) -> None:
        while True:
            due = self.service.next_presence_check()
            timeout = None if due is None else max(due - self.service.now(), MIN_CHECK_SECONDS)
            # woken early when a node connects: its deadline may come before the one awaited
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            try:
                await self.send(self.service.check_presence())
            except Exception:  # one failed emit must not end the watch over every node
                log.exception("checking node presence failed")

    async def close(self) -> None:
        """Hang up on every client so the web server can stop without waiting for them."""
        c = self.commits
        log.info("group commit: %d results and status changes in %d commits (largest %d)",
                 c.writes, c.groups, c.largest)
        for sid in list(self.peers):
            await self.sio.disconnect(sid)
        if self.sio.eio.sockets:  # engineio's disconnect() fails on an empty set
            await self.sio.eio.disconnect()  # also close the transports, not only the sessions
        await self.sio.shutdown()

    async def explain(self, commands: dict[str, dict], timeout: float = 15.0) -> dict:
        """Ask each node what it would do with its command (a dry run); each node's answer, or
        why there is none."""

        async def ask(node_id: str, command: dict):
            sids = [sid for sid, peer in self.peers.items() if peer == ("node", node_id)]
            if not sids:
                return node_id, {"ok": False, "error": "node offline"}
            try:
                answer = await self.sio.call("explain_task", command, to=sids[-1],
                                             timeout=timeout)
            except socketio.exceptions.TimeoutError:
                return node_id, {"ok": False, "error": "node did not answer in time"}
            if not isinstance(answer, dict):  # a node without explain_task answers nothing
                return node_id, {"ok": False, "error": "node cannot explain tasks"}
            return node_id, answer

        return dict(await asyncio.gather(*(ask(n, c) for n, c in commands.items())))

    async def kill(self, task_id: int, node_ids: list[str], timeout: float = 10.0) -> dict:
        """Ask each node to kill the task's runs; returns each node's answer (or why none)."""

        async def ask(node_id: str):
            sids = [sid for sid, peer in self.peers.items() if peer == ("node", node_id)]
            if not sids:
                return node_id, {"error": "node offline"}
            try:
                answer = await self.sio.call("kill_task", {"task_id": task_id}, to=sids[-1],
                                             timeout=timeout)
            except socketio.exceptions.TimeoutError:
                return node_id, {"error": "node did not answer in time"}
            return node_id, answer

        return dict(await asyncio.gather(*(ask(n) for n in node_ids)))

    async def send(self, messages: list[Message]) -> None:
        for m in messages:
            await self.sio.emit(m.event, m.data, room=m.room)

    async def on_connect(self, sid: str, environ: dict, auth: Any = None) -> None:
        key = auth.get("api_key") if isinstance(auth, dict) else None
        config = self.service.config
        if isinstance(key, str) and key in config.node_keys:
            node_id = config.node_keys[key]
            self.peers[sid] = ("node", node_id)
            log.info("node %s connected", node_id)
            await self.send(self.service.node_connected(node_id))
            self._wake.set()
            # The client counts as connected only once this handler has returned; events sent
            # before that could be dropped, so joining the room and resending happen after.
            self.sio.start_background_task(self._join_and_resend, sid, node_id)
        elif isinstance(key, str) and key in config.researcher_keys:
            name = config.researcher_keys[key]
            self.peers[sid] = ("researcher", name)
            await self.sio.enter_room(sid, researcher_room(name))
            await self.sio.enter_room(sid, RESEARCHERS_ROOM)
            log.info("researcher %s connected", name)
        else:
            log.warning("connection refused: invalid api key")
            raise socketio.exceptions.ConnectionRefusedError("invalid api key")

    async def _join_and_resend(self, sid: str, node_id: str) -> None:
        for _ in range(500):
            if self.sio.manager.is_connected(sid, NAMESPACE):
                break
            await asyncio.sleep(0.01)
        else:
            return
        # No suspension between joining and reading the pending runs: a run created before
        # is resent, one created after is emitted to the room (at worst both; nodes ignore
        # run ids they have seen).
        await self.sio.enter_room(sid, node_room(node_id))
        commands = self.service.pending_commands(node_id)
        for command in commands:
            await self.sio.emit("command", command, to=sid)
        if commands:
            log.info("sent %d pending command(s) to node %s", len(commands), node_id)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        kind, ident = self.peers.pop(sid, (None, None))
        if kind == "node":
            log.info("node %s disconnected", ident)
            await self.send(self.service.node_disconnected(ident))

    def _peer(self, sid: str, kind: str) -> str | None:
        peer_kind, ident = self.peers.get(sid, (None, None))
        return ident if peer_kind == kind else None

    async def _node(self, sid: str) -> str | None:
        """The node behind ``sid`` (None for others); every event of a node is a sign of life."""
        node_id = self._peer(sid, "node")
        if node_id is not None:
            await self.send(self.service.node_alive(node_id))
        return node_id

    async def on_node_heartbeat(self, sid: str, data: Any = None, *_extra: Any) -> dict:
        node_id = self._peer(sid, "node")
        if node_id is None:
            return {"ok": False, "error": "only nodes send heartbeats"}
        ack, messages = self.service.node_heartbeat(node_id, data)
        await self.send(messages)
        return ack

    # Events may come with no argument or with several (any Socket.IO client can send them):
    # without these defaults the handler raised TypeError and the sender never got an answer.
    async def on_node_connection_request(self, sid: str, data: Any = None, *_extra: Any) -> None:
        node_id = await self._node(sid)
        version = data.get("version") if isinstance(data, dict) else None
        log.info("node %s announced itself (version %s)", node_id, version)

    async def on_algorithm_status_change(self, sid: str, data: Any = None, *_extra: Any) -> dict:
        node_id = await self._node(sid)
        if node_id is None:
            return {"ok": False, "error": "only nodes report status changes"}
        try:
            await self.send(await self.commits.run(
                lambda: self.service.status_change(node_id, data)))
        except ServerError as e:
            log.warning("status change from %s refused: %s", node_id, e)
            return {"ok": False, "error": str(e)}
        return {"ok": True}

    async def on_algorithm_progress(self, sid: str, data: Any = None, *_extra: Any) -> dict:
        node_id = await self._node(sid)
        if node_id is None:
            return {"ok": False, "error": "only nodes report progress"}
        try:
            await self.send(self.service.progress(node_id, data))
        except ServerError as e:
            log.debug("progress from %s refused: %s", node_id, e)
            return {"ok": False, "error": str(e)}
        return {"ok": True}

    async def on_run_result(self, sid: str, data: Any = None, *_extra: Any) -> dict:
        node_id = await self._node(sid)
        if node_id is None:
            return {"ok": False, "error": "only nodes report results"}
        try:
            ack, messages = await self.commits.run(lambda: self.service.result(node_id, data))
        except ServerError as e:
            log.warning("result from %s refused: %s", node_id, e)
            return {"ok": False, "error": str(e)}
        await self.send(messages)
        return ack

    async def on_command_rejected(self, sid: str, data: Any = None, *_extra: Any) -> None:
        node_id = await self._node(sid)
        if isinstance(data, dict):
            log.warning("node %s rejected run %s: %s", node_id, data.get("run_id"),
                        str(data.get("error"))[:500])

    async def on_command_request(self, sid: str, data: Any = None, *_extra: Any) -> dict:
        researcher = self._peer(sid, "researcher")
        run_id = data.get("run_id") if isinstance(data, dict) else None
        # echo only a real id: a run_id nested 900 deep made encoding command_error raise
        # RecursionError, and the researcher never got an answer (tests/reliability)
        run_id = run_id if is_id(run_id) else None
        if researcher is None:
            return {"ok": False, "error": "only researchers may send command_request"}
        try:
            ack, messages = self.service.create_legacy_task(researcher, data)
        except ServerError as e:
            await self.sio.emit("command_error", {"run_id": run_id, "error": str(e)}, to=sid)
            return {"ok": False, "error": str(e)}
        await self.send(messages)
        return {"ok": True, **ack}
