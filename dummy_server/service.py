"""The server's core: tasks, runs, results and permissions, on top of the store.

No I/O besides the store: every operation returns the Socket.IO messages to send, and the thin
Socket.IO/HTTP layers send them. That keeps the rules testable and in one place.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from . import presence, tokens
from .config import ServerConfig
from .errors import BadRequest, Forbidden, NotFound, TokenError, Unauthorized
from .store import TERMINAL, Store
from .validation import (COMMAND_KEYS, TaskRequest, is_id, parse_legacy_request, parse_result,
                         parse_status_change)

log = logging.getLogger(__name__)
DRY_RUN_TOKEN = "dry-run-not-a-token"  # what a node's dry run gets as the run's token


@dataclass(frozen=True)
class Message:
    event: str
    data: dict
    room: str


@dataclass(frozen=True)
class Researcher:
    name: str


@dataclass(frozen=True)
class Container:
    claims: tokens.Claims


Principal = Researcher | Container


def node_room(node_id: str) -> str:
    return f"node:{node_id}"


def researcher_room(name: str) -> str:
    return f"researcher:{name}"


RESEARCHERS_ROOM = "researchers"  # every researcher: node state changes concern them all


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


MAX_PROGRESS_MESSAGE = 500
KILLED = "killed by user"


def _ended(run: dict) -> str | None:
    """Why a run's container token no longer works (None: the run is pending/initializing/
    active and has no result yet)."""
    status = run["status"]
    if status not in TERMINAL and run["result"] is None:
        return None
    if status == "completed":
        return "the run is completed"
    if status == KILLED:
        return "the run was killed"
    if status in TERMINAL:
        return f"the run ended as {status!r}"
    return "the run's result has arrived"


def parse_progress(data: Any) -> tuple[int, int, float | None, str]:
    """(run_id, seq, progress, message) of an ``algorithm_progress`` report."""
    if not isinstance(data, dict):
        raise BadRequest("algorithm_progress needs an object")

    def whole(key: str) -> int:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2 ** 53:
            raise BadRequest(f"{key}: must be a positive integer")
        return value
    run_id, seq = whole("run_id"), whole("seq")
    fraction = data.get("progress")
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
                or not 0.0 <= fraction <= 1.0:
            raise BadRequest("progress: must be a number from 0 to 1, or null")
        fraction = float(fraction)
    message = data.get("message", "")
    if not isinstance(message, str):
        raise BadRequest("message: must be a string")
    return run_id, seq, fraction, message[:MAX_PROGRESS_MESSAGE]


def task_status(runs: list[dict]) -> str:
    statuses = [r["status"] for r in runs]
    if statuses and all(s == "completed" for s in statuses):
        return "completed"
    if statuses and all(s in TERMINAL for s in statuses):
        return "failed"
    if all(s == "pending" for s in statuses):
        return "pending"
    return "active"


class Service:
    def __init__(self, config: ServerConfig, store: Store, clock=time.time):
        self.config = config
        self.store = store
        self._clock = clock
        # latest progress per run (node id, run id): live only, not kept across restarts
        self.latest_progress: dict[tuple[str, int], dict] = {}
        known = self.store.nodes()
        self.presence = presence.Presence.starting(config.heartbeat, {
            n: max(filter(None, (known.get(n, {}).get("last_seen"),
                                 known.get(n, {}).get("last_disconnect"))), default=None)
            for n in config.node_ids})

    def now(self) -> float:
        return self._clock()

    # --- authentication -------------------------------------------------------------------
    def authenticate(self, bearer: str | None, node_key: str | None = None) -> Principal:
        """Who is asking. ``node_key``: the X-V6-Node-Key header, which a node's proxy adds; a
        container token is accepted only with the key of its run's node, and only while that
        run is not finished (CONTRACTS §3)."""
        if not bearer:
            raise Unauthorized("missing bearer token")
        name = self.config.researcher_keys.get(bearer)
        if name is not None:
            return Researcher(name)
        if bearer in self.config.node_keys:
            raise Forbidden("node keys are for the Socket.IO channel, not the HTTP API")
        if "." not in bearer:
            raise Unauthorized("invalid api key or token")
        claims = tokens.verify(self.config.token_secret, bearer, self._clock())
        run = self.store.run_of_node(claims.run_id, claims.node_id)
        if run is None or run["task_id"] != claims.task_id:
            raise TokenError("token does not match a known run")
        self._check_node_identity(claims, node_key)
        ended = _ended(run)
        if ended is not None:
            raise TokenError(f"container token of run {claims.run_id} is no longer valid: "
                             f"{ended}")
        return Container(claims)

    def _check_node_identity(self, claims: tokens.Claims, node_key: str | None) -> None:
        if not node_key:
            raise Unauthorized("container tokens are accepted only through a node's proxy "
                               "(no node identity)")
        via = self.config.node_keys.get(node_key)
        if via is None:  # the key itself is never echoed
            raise Unauthorized("container tokens are accepted only through a node's proxy "
                               "(unknown node identity)")
        if via != claims.node_id:
            log.warning("container token of a run of %s presented through the proxy of %s",
                        claims.node_id, via)
            raise Forbidden(f"container token of a run of node '{claims.node_id}' was "
                            f"presented through the proxy of node '{via}'")

    def parent_run_status(self, who: Principal) -> str | None:
        """The status of the run whose token ``who`` holds (None for researchers)."""
        if not isinstance(who, Container):
            return None
        run = self.store.run_of_node(who.claims.run_id, who.claims.node_id)
        return None if run is None else run["status"]

    # --- tasks ----------------------------------------------------------------------------
    def create_task(self, who: Principal, req: TaskRequest) -> tuple[dict, list[Message]]:
        parent_id = None
        owner = who.name if isinstance(who, Researcher) else None
        nodes = req.nodes or self.config.node_ids
        if isinstance(who, Container):
            status = self.parent_run_status(who)
            if status != "active":
                raise Forbidden(f"run {who.claims.run_id} is {status or 'unknown'}: a subtask "
                                f"can be created only while its parent run is active")
            parent = self.store.task(who.claims.task_id)
            if parent is None:
                raise Forbidden("the token's task no longer exists")
            parent_id, owner = parent["id"], parent["owner"]
            parent_nodes = [r["node_id"] for r in self.store.runs_of_task(parent_id)]
            nodes = req.nodes or parent_nodes
            outside = [n for n in nodes if n not in parent_nodes]
            if outside:
                raise Forbidden(f"a subtask may only target the parent task's nodes, "
                                f"not {', '.join(outside)}")
        if not nodes:
            raise BadRequest("nodes: the server knows no nodes to run this task on")
        task_id, runs = self.store.create_rich_task(parent_id=parent_id, name=req.name,
                                                    image=req.image, owner=owner,
                                                    spec=req.spec(), nodes=nodes)
        task = self.store.task(task_id)
        messages = []
        for run in self.store.runs_of_task(task_id):
            messages.append(Message("command", self._command(task, run), node_room(run["node_id"])))
        log.info("task %s created with %d run(s) (parent %s)", task_id, len(runs), parent_id)
        created = {"id": task_id, "runs": runs}
        warnings = self.node_warnings(nodes)
        if warnings:
            created["warnings"] = warnings
        return created, messages

    def explain_commands(self, who: Principal, req: TaskRequest) -> dict[str, dict]:
        """A dry run (POST /api/explain): per target node, the command it would get for this
        task, with nothing stored. Placeholder ids (run 1 of task 1) and a token that is no
        token: nothing can run from it."""
        if not isinstance(who, Researcher):
            raise Forbidden("only researchers ask for dry runs")
        nodes = req.nodes or self.config.node_ids
        if not nodes:
            raise BadRequest("nodes: the server knows no nodes to run this task on")
        spec = req.spec()
        commands = {}
        for node_id in nodes:
            command = {"run_id": 1, "task_id": 1, "parent_id": None, "image": req.image,
                       "input": spec.get("input"), "databases": spec.get("databases", []),
                       "token": DRY_RUN_TOKEN}
            for key in COMMAND_KEYS:
                if key in spec:
                    command[key] = spec[key]
            commands[node_id] = command
        return commands

    def create_legacy_task(self, researcher: str, payload: Any) -> tuple[dict, list[Message]]:
        relay, nodes = parse_legacy_request(payload, self.config.node_ids)
        run_id = relay["run_id"]
        if not self.store.create_legacy_task(run_id=run_id, image=relay["image"], owner=researcher,
                                             spec=relay, nodes=nodes):
            raise BadRequest(f"run_id {run_id} is already used by another task")
        log.info("legacy task %s relayed to %d node(s)", run_id, len(nodes))
        ack = {"task_id": run_id, "nodes": nodes}
        warnings = self.node_warnings(nodes)
        if warnings:
            ack["warnings"] = warnings
        return ack, [Message("command", relay, node_room(n)) for n in nodes]

    def pending_commands(self, node_id: str) -> list[dict]:
        commands = []
        for run in self.store.pending_runs(node_id):
            commands.append(self._command(self.store.task(run["task_id"]), run))
        return commands

    def _command(self, task: dict, run: dict) -> dict:
        if task["kind"] == "legacy":
            return task["spec"]
        claims = tokens.Claims(task_id=task["id"], run_id=run["run_id"], node_id=run["node_id"],
                               exp=int(self._clock()) + self.config.token_ttl_seconds)
        spec = task["spec"]
        command = {"run_id": run["run_id"], "task_id": task["id"], "parent_id": task["parent_id"],
                   "image": task["image"], "input": spec.get("input"),
                   "databases": spec.get("databases", []),
                   "token": tokens.sign(self.config.token_secret, claims)}
        for key in COMMAND_KEYS:
            if key in spec:
                command[key] = spec[key]
        return command

    # --- node presence (CONTRACTS §2) ------------------------------------------------------
    def node_connected(self, node_id: str) -> list[Message]:
        self.store.node_seen(node_id, online=True)
        return self._presence_messages([self.presence.connected(node_id, self._clock())])

    def node_disconnected(self, node_id: str) -> list[Message]:
        change = self.presence.disconnected(node_id, self._clock())
        if not self.presence.get(node_id).sessions:
            self.store.node_seen(node_id, online=False)
        return self._presence_messages([change])

    def node_alive(self, node_id: str) -> list[Message]:
        """Any event from a node is a sign of life. A node back from ``offline`` without a new
        session (its link stalled, it did not reconnect) gets its pending runs again: commands
        sent meanwhile may have been lost, and nodes ignore run ids they have seen."""
        change = self.presence.seen(node_id, self._clock())
        messages = self._presence_messages([change])
        if change is not None and change.previous == presence.OFFLINE:
            messages += [Message("command", c, node_room(node_id))
                         for c in self.pending_commands(node_id)]
        return messages

    def node_heartbeat(self, node_id: str, data: Any) -> tuple[dict, list[Message]]:
        """A ``node_heartbeat``; its payload is informative only, any shape counts as a beat."""
        messages = self.node_alive(node_id)
        ack = {"ok": True, "state": self.presence.get(node_id).state,
               "interval_seconds": self.config.heartbeat.interval_seconds}
        return ack, messages

    def check_presence(self) -> list[Message]:
        return self._presence_messages(self.presence.tick(self._clock()))

    def next_presence_check(self) -> float | None:
        return self.presence.next_check()

    def _presence_messages(self, changes: list[presence.Change | None]) -> list[Message]:
        messages = []
        for change in filter(None, changes):
            self.store.node_presence(change.node_id, change.state != presence.OFFLINE,
                                     change.last_seen)
            log_at = logging.INFO if change.state == presence.ALIVE else logging.WARNING
            log.log(log_at, "node %s is %s (was %s)", change.node_id, change.state,
                    change.previous)
            messages.append(Message("node_state", change.event(), RESEARCHERS_ROOM))
        return messages

    def node_warnings(self, nodes: list[str]) -> list[str]:
        """What a researcher should know about the nodes a new task targets."""
        warnings = []
        for node_id in nodes:
            node = self.presence.get(node_id)
            if node.state == presence.OFFLINE:
                since = (f"since {_when(node.since)}" if node.since is not None
                         else "and has not connected since the server started")
                warnings.append(f"node {node_id} is offline {since}; its runs wait until it "
                                f"reconnects")
            elif node.state == presence.SUSPECTED:
                warnings.append(f"node {node_id} is suspected offline: no heartbeat since "
                                f"{_when(node.last_seen)}; its runs may wait until it answers")
        return warnings

    # --- reports from nodes ---------------------------------------------------------------
    def status_change(self, node_id: str, data: Any) -> list[Message]:
        run_id, status, detail = parse_status_change(data)
        run = self.store.run_of_node(run_id, node_id)
        if run is None:
            raise NotFound(f"run {run_id} is not a run of node {node_id}")
        if not self.store.set_status(run["pk"], status, detail):
            log.info("run %s on %s: status %r ignored (already %r)", run_id, node_id, status,
                     run["status"])
            return []
        return self._to_owner(run["task_id"], "task_status",
                              {"task_id": run["task_id"], "run_id": run_id, "node_id": node_id,
                               "status": status, "detail": detail})

    def progress(self, node_id: str, data: Any) -> list[Message]:
        """A progress report of a running algorithm (CONTRACTS §9), passed on to the task's
        owner as ``task_progress``. Reports arrive in ``seq`` order; a stale or repeated one
        (e.g. after a node reconnect) is dropped, so researchers see each step once, in order."""
        run_id, seq, fraction, message = parse_progress(data)
        run = self.store.run_of_node(run_id, node_id)
        if run is None:
            raise NotFound(f"run {run_id} is not a run of node {node_id}")
        key = (node_id, run_id)
        if seq <= self.latest_progress.get(key, {}).get("seq", 0):
            return []
        event = {"task_id": run["task_id"], "run_id": run_id, "node_id": node_id, "seq": seq,
                 "progress": fraction, "message": message}
        self.latest_progress[key] = event
        return self._to_owner(run["task_id"], "task_progress", event)

    def result(self, node_id: str, data: Any) -> tuple[dict, list[Message]]:
        run_id, status, result_data, logs, provenance = parse_result(data)
        run = self.store.run_of_node(run_id, node_id)
        if run is None:
            raise NotFound(f"run {run_id} is not a run of node {node_id}")
        if not self.store.store_result(run["pk"], status, result_data, logs, provenance):
            return {"ok": True, "duplicate": True}, []
        return {"ok": True, "duplicate": False}, self._to_owner(
            run["task_id"], "task_result",
            {"task_id": run["task_id"], "run_id": run_id, "node_id": node_id, "status": status,
             "data": result_data, "logs": logs, **({"provenance": provenance} if provenance else {})})

    def _to_owner(self, task_id: int, event: str, data: dict) -> list[Message]:
        task = self.store.task(task_id)
        if task is None or task["owner"] is None:
            return []
        return [Message(event, data, researcher_room(task["owner"]))]

    def kill_targets(self, who: Principal, task_id: int) -> list[str]:
        """The nodes that still have an unfinished run of the task (checked: who may kill it)."""
        task = self.store.task(task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found")
        if isinstance(who, Container):
            if task["parent_id"] != who.claims.task_id:
                raise Forbidden("a container token may kill only its own subtasks")
        else:
            self._check_read(who, task)
        return [r["node_id"] for r in self.store.runs_of_task(task_id) if r["status"] not in TERMINAL]

    def kill_confirmed(self, task_id: int, answers: dict) -> list[Message]:
        """Mark the runs each node says it killed as ``killed by user`` at once, so their
        tokens die now rather than when the node's own status change arrives."""
        messages: list[Message] = []
        for node_id, answer in answers.items():
            killed = answer.get("killed") if isinstance(answer, dict) else None
            for run_id in killed if isinstance(killed, list) else []:
                run = self.store.run_of_node(run_id, node_id) if is_id(run_id) else None
                if run is None or run["task_id"] != task_id:
                    continue
                detail = "kill confirmed by the node"
                if self.store.set_status(run["pk"], KILLED, detail):
                    messages += self._to_owner(task_id, "task_status", {
                        "task_id": task_id, "run_id": run_id, "node_id": node_id,
                        "status": KILLED, "detail": detail})
        return messages

    # --- reading back ---------------------------------------------------------------------
    def _check_read(self, who: Principal, task: dict) -> None:
        if isinstance(who, Researcher):
            if task["owner"] != who.name:
                raise Forbidden(f"task {task['id']} belongs to another researcher")
        elif task["id"] != who.claims.task_id and task["parent_id"] != who.claims.task_id:
            raise Forbidden("a container token may read only its own task and its subtasks")

    def run_view(self, run: dict) -> dict:
        return {"id": run["run_id"], "task_id": run["task_id"], "node_id": run["node_id"],
                "status": run["status"], "history": self.store.history(run["pk"]),
                "result": run["result"], "progress": self._progress_view(run)}

    def _progress_view(self, run: dict) -> dict | None:
        latest = self.latest_progress.get((run["node_id"], run["run_id"]))
        return None if latest is None else {k: latest[k] for k in ("seq", "progress", "message")}

    def get_task(self, who: Principal, task_id: int) -> dict:
        task = self.store.task(task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found")
        self._check_read(who, task)
        runs = self.store.runs_of_task(task_id)
        return {"id": task["id"], "parent_id": task["parent_id"], "name": task["name"],
                "kind": task["kind"], "image": task["image"], "status": task_status(runs),
                "runs": [self.run_view(r) for r in runs]}

    def get_run(self, who: Principal, run_id: int, node_id: str | None) -> dict:
        runs = self.store.runs_by_id(run_id)
        if node_id is not None:
            runs = [r for r in runs if r["node_id"] == node_id]
        if not runs:
            raise NotFound(f"run {run_id} not found")
        if len(runs) > 1:
            raise BadRequest(f"run id {run_id} belongs to a prototype task on several nodes; "
                             f"add ?node_id= (one of {', '.join(r['node_id'] for r in runs)})")
        self._check_read(who, self.store.task(runs[0]["task_id"]))
        return self.run_view(runs[0])

    def nodes(self, who: Principal) -> list[dict]:
        if not isinstance(who, Researcher):
            raise Forbidden("only researchers may list nodes")
        seen = self.store.nodes()
        return [{"id": n, **self.presence.view(n),
                 "last_connect": seen.get(n, {}).get("last_connect"),
                 "last_disconnect": seen.get(n, {}).get("last_disconnect")}
                for n in self.config.node_ids]
