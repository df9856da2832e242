"""The node's durable memory, one SQLite file under task_dir.

- `runs`: every run id the node accepted, with its state. A restarted node uses it so that nothing
  is started twice (a command seen again is ignored) and nothing is reported twice (a finished run
  found in the cluster is only cleaned up).
- `outbox`: results not yet acknowledged by the server. A result is written here in the same
  transaction that marks its run finished, before the Job is deleted, so a crash at any point
  loses nothing and duplicates nothing.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from node.errors import OutboxError
from node.models import Result

log = logging.getLogger(__name__)

# What a write can raise besides sqlite3.Error: values SQLite cannot store (an integer beyond 64
# bits raises OverflowError). Any of them must roll the open transaction back, or every later
# "BEGIN IMMEDIATE" fails with "cannot start a transaction within a transaction" and the node
# can never record a result again (found by tests/reliability/test_fuzz_node.py).
_WRITE_ERRORS = (sqlite3.Error, OverflowError, ValueError, TypeError)

ACCEPTED = "accepted"   # validated; Job not yet known to exist
CREATED = "created"     # Job created (or adopted)
FINISHED = "finished"   # result in the outbox (or delivered)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    command TEXT,             -- the validated command, to create the Job after a crash
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS image_pins (
    image TEXT PRIMARY KEY,   -- the tag as tasks name it (images.digest: pin)
    digest TEXT NOT NULL,     -- sha256:<hex> the kubelet reported for its first run
    run_id INTEGER NOT NULL,  -- that first run
    pinned REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    run_id INTEGER PRIMARY KEY,
    result TEXT NOT NULL,
    created REAL NOT NULL
);
"""


@dataclass(frozen=True)
class RunRow:
    run_id: int
    task_id: int
    state: str
    command: dict | None


@dataclass(frozen=True)
class Pin:
    image: str
    digest: str
    run_id: int
    pinned: float


class Ledger:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            os.chmod(path, 0o600)  # holds container tokens of runs not yet started
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as e:
            raise OutboxError(f"cannot open the node's ledger at {path}: {e}") from e

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, statements: list[tuple[str, tuple]]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for sql, args in statements:
                    self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except _WRITE_ERRORS as e:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise OutboxError(f"ledger write failed: {e}") from e

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise OutboxError(f"ledger read failed: {e}") from e

    # -- runs --------------------------------------------------------------------------------
    def accept(self, run_id: int, task_id: int, command: dict) -> bool:
        """Record a new run. False when the run id was seen before (then nothing changes)."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO runs (run_id, task_id, state, command, updated) VALUES (?,?,?,?,?)",
                    (run_id, task_id, ACCEPTED, json.dumps(command), time.time()))
                return True
            except sqlite3.IntegrityError:
                return False
            except _WRITE_ERRORS as e:
                raise OutboxError(f"ledger write failed: {e}") from e

    def mark_created(self, run_id: int) -> None:
        # the command (with its token) is no longer needed once the Job exists
        self._tx([("UPDATE runs SET state=?, command=NULL, updated=? WHERE run_id=? AND state=?",
                   (CREATED, time.time(), run_id, ACCEPTED))])

    def finish(self, result: Result) -> bool:
        """Mark the run finished and queue its result, atomically. False if already finished."""
        return self.finish_many([result])[0]

    def finish_many(self, results: list[Result]) -> list[bool]:
        """`finish` for each result, all in one transaction (one commit, one fsync, for a burst of
        runs ending together): per result, False if its run was finished already (also by an
        earlier result in the list). On an error nothing is stored (OutboxError)."""
        done: list[bool] = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for result in results:
                    done.append(self._finish_one(result))
                self._db.execute("COMMIT")
                return done
            except _WRITE_ERRORS as e:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                which = (f"run {results[0].run_id}" if len(results) == 1 else
                         f"{len(results)} runs ({', '.join(str(r.run_id) for r in results[:5])}"
                         f"{', ...' if len(results) > 5 else ''})")
                raise OutboxError(f"cannot store the result of {which}: {e}") from e

    def _finish_one(self, result: Result) -> bool:
        row = self._db.execute("SELECT state FROM runs WHERE run_id=?", (result.run_id,)).fetchone()
        if row and row[0] == FINISHED:
            return False
        now = time.time()
        if row is None:
            self._db.execute("INSERT INTO runs (run_id, task_id, state, command, updated) "
                             "VALUES (?,?,?,NULL,?)", (result.run_id, result.task_id, FINISHED, now))
        else:
            self._db.execute("UPDATE runs SET state=?, command=NULL, updated=? WHERE run_id=?",
                             (FINISHED, now, result.run_id))
        self._db.execute("INSERT OR REPLACE INTO outbox (run_id, result, created) VALUES (?,?,?)",
                         (result.run_id, json.dumps(result.to_dict()), now))
        return True

    def get(self, run_id: int) -> RunRow | None:
        rows = self._query("SELECT run_id, task_id, state, command FROM runs WHERE run_id=?",
                           (run_id,))
        return _row(rows[0]) if rows else None

    def unfinished(self) -> list[RunRow]:
        return [_row(r) for r in self._query(
            "SELECT run_id, task_id, state, command FROM runs WHERE state != ? ORDER BY run_id",
            (FINISHED,))]

    def runs_of_task(self, task_id: int) -> list[RunRow]:
        return [_row(r) for r in self._query(
            "SELECT run_id, task_id, state, command FROM runs WHERE task_id=?", (task_id,))]

    # -- image pins (images.digest: pin) ------------------------------------------------------
    def pin(self, image: str, digest: str, run_id: int) -> Pin:
        """Pin `image` to `digest` unless it is pinned already; the pin in force either way."""
        self._tx([("INSERT OR IGNORE INTO image_pins (image, digest, run_id, pinned) "
                   "VALUES (?,?,?,?)", (image, digest, run_id, time.time()))])
        pin = self.pin_of(image)
        assert pin is not None
        return pin

    def pin_of(self, image: str) -> Pin | None:
        rows = self._query("SELECT image, digest, run_id, pinned FROM image_pins WHERE image=?",
                           (image,))
        return Pin(*rows[0]) if rows else None

    def pins(self) -> list[Pin]:
        return [Pin(*r) for r in self._query(
            "SELECT image, digest, run_id, pinned FROM image_pins ORDER BY image")]

    def forget_pin(self, image: str) -> bool:
        """Drop a pin (the operator accepts the tag's new content); False if there was none."""
        with self._lock:
            try:
                return self._db.execute("DELETE FROM image_pins WHERE image=?",
                                        (image,)).rowcount > 0
            except _WRITE_ERRORS as e:
                raise OutboxError(f"ledger write failed: {e}") from e

    # -- outbox ------------------------------------------------------------------------------
    def pending_results(self, limit: int = 50) -> list[dict]:
        return [json.loads(r[0]) for r in self._query(
            "SELECT result FROM outbox ORDER BY created LIMIT ?", (limit,))]

    def delivered(self, run_id: int) -> None:
        self.delivered_many([run_id])

    def delivered_many(self, run_ids: list[int]) -> None:
        """The server has these results: out of the outbox, in one transaction."""
        if run_ids:
            self._tx([("DELETE FROM outbox WHERE run_id=?", (r,)) for r in run_ids])

    def outbox_size(self) -> int:
        return self._query("SELECT COUNT(*) FROM outbox")[0][0]


def _row(r: tuple) -> RunRow:
    return RunRow(r[0], r[1], r[2], json.loads(r[3]) if r[3] else None)
