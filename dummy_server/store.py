"""SQLite persistence of tasks, runs, status history, results and node presence.

Synchronous and small: the server calls it from its event loop; every write commits at once so
state survives a restart, unless it runs inside ``group()``: then the writes of the group commit
together (one fsync for many results), each still all-or-nothing on its own. Runs have an internal primary key ``pk``; ``run_id`` is the id the node
and the API see (equal to ``pk`` for rich runs, the prototype's run id for legacy runs, which is
shared by the runs of one legacy task on different nodes).
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

TERMINAL = frozenset({"completed", "failed", "start failed", "non-existing Docker image", "crashed",
                      "killed by user", "not allowed", "unknown error"})
STATUSES = TERMINAL | {"pending", "initializing", "active"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    parent_id INTEGER REFERENCES tasks(id),
    kind TEXT NOT NULL,               -- 'rich' or 'legacy'
    name TEXT,
    image TEXT NOT NULL,
    owner TEXT,                       -- researcher who receives the events
    spec TEXT NOT NULL,               -- JSON: rich task body or legacy payload as relayed
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL,
    task_id INTEGER NOT NULL REFERENCES tasks(id),
    node_id TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,                      -- JSON {data, logs, status, provenance} once reported
    UNIQUE (run_id, node_id)
);
CREATE INDEX IF NOT EXISTS runs_by_task ON runs(task_id);
CREATE TABLE IF NOT EXISTS history (
    run_pk INTEGER NOT NULL REFERENCES runs(pk),
    status TEXT NOT NULL,
    at REAL NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS history_by_run ON history(run_pk);
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY,
    online INTEGER NOT NULL,
    last_connect REAL,
    last_disconnect REAL,
    last_seen REAL                    -- last sign of life, written when the node's state changes
);
"""


class Store:
    def __init__(self, path: Path | str, clock=time.time):
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.row_factory = sqlite3.Row
        # as the node's ledger: a write-ahead log, synced on every commit. A result is
        # acknowledged only once it is on disk (the node then forgets it), and WAL does that with
        # one fsync per commit where the default rollback journal needed several (1,000 results
        # took 4 s of commits on the server's event loop)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._clock = clock
        self._depth = 0  # open transactions: inside a group(), a write is a savepoint
        self._db.executescript(_SCHEMA)
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(nodes)")}
        if "last_seen" not in columns:  # a database made before heartbeats existed
            self._db.execute("ALTER TABLE nodes ADD COLUMN last_seen REAL")
        # Nobody is connected to a server that just started.
        self._db.execute("UPDATE nodes SET online = 0")

    def close(self) -> None:
        self._db.close()

    # --- tasks and runs -------------------------------------------------------------------
    def create_rich_task(self, *, parent_id: int | None, name: str | None, image: str,
                         owner: str | None, spec: dict, nodes: list[str]) -> tuple[int, list[dict]]:
        now = self._clock()
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO tasks (parent_id, kind, name, image, owner, spec, created_at) "
                "VALUES (?, 'rich', ?, ?, ?, ?, ?)",
                (parent_id, name, image, owner, json.dumps(spec), now))
            task_id = cur.lastrowid
            runs = []
            for node_id in nodes:
                # run_id = pk; the placeholder 0 is replaced in the same transaction
                cur = self._db.execute(
                    "INSERT INTO runs (run_id, task_id, node_id, status) VALUES (0, ?, ?, 'pending')",
                    (task_id, node_id))
                pk = cur.lastrowid
                self._db.execute("UPDATE runs SET run_id = pk WHERE pk = ?", (pk,))
                self._add_history(pk, "pending", now, None)
                runs.append({"id": pk, "node_id": node_id})
        return task_id, runs

    def create_legacy_task(self, *, run_id: int, image: str, owner: str, spec: dict,
                           nodes: list[str]) -> bool:
        """Record a prototype task (id = run id); False when that id is already used."""
        now = self._clock()
        with self._tx():
            taken = self._db.execute(
                "SELECT 1 FROM tasks WHERE id = ? UNION SELECT 1 FROM runs WHERE run_id = ?",
                (run_id, run_id)).fetchone()
            if taken:
                return False
            self._db.execute(
                "INSERT INTO tasks (id, parent_id, kind, name, image, owner, spec, created_at) "
                "VALUES (?, NULL, 'legacy', NULL, ?, ?, ?, ?)",
                (run_id, image, owner, json.dumps(spec), now))
            for node_id in nodes:
                cur = self._db.execute(
                    "INSERT INTO runs (run_id, task_id, node_id, status) VALUES (?, ?, ?, 'pending')",
                    (run_id, run_id, node_id))
                self._add_history(cur.lastrowid, "pending", now, None)
            # Keep later rich ids clear of this one: autoincrement continues above it.
            self._db.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'runs'",
                             (run_id,))
        return True

    def task(self, task_id: int) -> dict | None:
        row = self._db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            return None
        task = dict(row)
        task["spec"] = json.loads(task["spec"])
        return task

    def runs_of_task(self, task_id: int) -> list[dict]:
        rows = self._db.execute("SELECT * FROM runs WHERE task_id = ? ORDER BY pk", (task_id,))
        return [self._run(r) for r in rows.fetchall()]

    def runs_by_id(self, run_id: int) -> list[dict]:
        rows = self._db.execute("SELECT * FROM runs WHERE run_id = ? ORDER BY pk", (run_id,))
        return [self._run(r) for r in rows.fetchall()]

    def run_of_node(self, run_id: int, node_id: str) -> dict | None:
        row = self._db.execute("SELECT * FROM runs WHERE run_id = ? AND node_id = ?",
                               (run_id, node_id)).fetchone()
        return None if row is None else self._run(row)

    def pending_runs(self, node_id: str) -> list[dict]:
        rows = self._db.execute(
            "SELECT * FROM runs WHERE node_id = ? AND status = 'pending' ORDER BY pk", (node_id,))
        return [self._run(r) for r in rows.fetchall()]

    def history(self, run_pk: int) -> list[dict]:
        rows = self._db.execute(
            "SELECT status, at, detail FROM history WHERE run_pk = ? ORDER BY rowid", (run_pk,))
        return [dict(r) for r in rows.fetchall()]

    def set_status(self, run_pk: int, status: str, detail: str | None) -> bool:
        """Record a status change; a terminal status is never replaced. True when applied."""
        with self._tx():
            row = self._db.execute("SELECT status FROM runs WHERE pk = ?", (run_pk,)).fetchone()
            if row is None or row["status"] in TERMINAL:
                return False
            self._db.execute("UPDATE runs SET status = ? WHERE pk = ?", (status, run_pk))
            self._add_history(run_pk, status, self._clock(), detail)
        return True

    def store_result(self, run_pk: int, status: str, data: Any, logs: Any,
                     provenance: dict | None = None) -> bool:
        """Store a run's result once; False (and nothing changed) when it already has one."""
        with self._tx():
            row = self._db.execute("SELECT status, result FROM runs WHERE pk = ?",
                                   (run_pk,)).fetchone()
            if row is None or row["result"] is not None:
                return False
            self._db.execute("UPDATE runs SET result = ? WHERE pk = ?",
                             (json.dumps({"data": data, "logs": logs, "status": status,
                                          **({"provenance": provenance} if provenance else {})}),
                              run_pk))
            if row["status"] not in TERMINAL and row["status"] != status:
                self._db.execute("UPDATE runs SET status = ? WHERE pk = ?", (status, run_pk))
                self._add_history(run_pk, status, self._clock(), "result reported")
        return True

    # --- nodes ----------------------------------------------------------------------------
    def node_seen(self, node_id: str, online: bool) -> None:
        now = self._clock()
        column = "last_connect" if online else "last_disconnect"
        self._db.execute(
            f"INSERT INTO nodes (node_id, online, {column}) VALUES (?, ?, ?) "
            f"ON CONFLICT(node_id) DO UPDATE SET online = excluded.online, {column} = excluded.{column}",
            (node_id, int(online), now))

    def node_presence(self, node_id: str, online: bool, last_seen: float | None) -> None:
        """Record a change of a node's liveness (CONTRACTS §2): online flag, last sign of life."""
        self._db.execute(
            "INSERT INTO nodes (node_id, online, last_seen) VALUES (?, ?, ?) "
            "ON CONFLICT(node_id) DO UPDATE SET online = excluded.online, "
            "last_seen = coalesce(max(last_seen, excluded.last_seen), last_seen, "
            "excluded.last_seen)",
            (node_id, int(online), last_seen))

    def nodes(self) -> dict[str, dict]:
        rows = self._db.execute("SELECT * FROM nodes").fetchall()
        return {r["node_id"]: {"online": bool(r["online"]), "last_connect": r["last_connect"],
                               "last_disconnect": r["last_disconnect"],
                               "last_seen": r["last_seen"]} for r in rows}

    # --- helpers --------------------------------------------------------------------------
    def _run(self, row: sqlite3.Row) -> dict:
        run = dict(row)
        run["result"] = None if run["result"] is None else json.loads(run["result"])
        return run

    def _add_history(self, run_pk: int, status: str, at: float, detail: str | None) -> None:
        self._db.execute("INSERT INTO history (run_pk, status, at, detail) VALUES (?, ?, ?, ?)",
                         (run_pk, status, at, detail))

    def group(self):
        """One transaction around many writes: nothing of them is on disk before it ends, and
        all of it is after (one commit). A write inside that fails undoes only itself."""
        return self._tx()

    def _tx(self):
        return _Transaction(self)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT/ROLLBACK (the connection is in autocommit mode otherwise);
    nested in another, a SAVEPOINT, so a failed inner write leaves the outer one's intact."""

    def __init__(self, store: Store):
        self._store = store
        self._name = ""

    def __enter__(self):
        db, depth = self._store._db, self._store._depth
        if depth:
            self._name = f"sp{depth}"
            db.execute(f"SAVEPOINT {self._name}")
        else:
            db.execute("BEGIN IMMEDIATE")
        self._store._depth = depth + 1

    def __exit__(self, exc_type, exc, tb):
        db = self._store._db
        self._store._depth -= 1
        if self._name:
            if exc_type:
                db.execute(f"ROLLBACK TO {self._name}")
            db.execute(f"RELEASE {self._name}")
        elif exc_type:
            db.execute("ROLLBACK")
        else:
            try:
                db.execute("COMMIT")
            except sqlite3.Error:
                if db.in_transaction:  # a failed COMMIT can leave it open: the writes are lost
                    db.execute("ROLLBACK")
                raise
        return False
