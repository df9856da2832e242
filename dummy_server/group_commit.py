"""Group commit: the results and status changes that reach a busy server close together are
stored in one transaction, and each is acknowledged only once that transaction is on disk.

A node sends up to 64 results at once (CONTRACTS: run_result is pipelined) and a status change
for each run; one fsync'd commit each made the server, not the node, the bound of 1,000 finishing
runs (the commits took 75 % of the server's time, serially, on its event loop).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, TypeVar

from .store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
# Socket.IO hands the server one event per turn of its loop, so writes never meet in one turn:
# a write that comes within this long of the last commit (the server is busy) waits this long
# for others to join it; one that comes to an idle server commits at once.
WINDOW_SECONDS = 0.005


class GroupCommit:
    def __init__(self, store: Store, window: float = WINDOW_SECONDS):
        self._store = store
        self._window = window
        self._queue: list[tuple[Callable[[], Any], asyncio.Future]] = []
        self._last_commit = float("-inf")  # loop time the last group was committed
        self.groups = 0  # commits made, for tests and logs
        self.writes = 0
        self.largest = 0

    async def run(self, write: Callable[[], T]) -> T:
        """Run ``write`` (synchronous, store writes only) in the next group; its return value
        once the group is committed, or its own exception (the others still commit)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((write, future))
        if len(self._queue) == 1:
            if loop.time() - self._last_commit < self._window:
                # busy: the writes arriving in the next moments join this group
                loop.call_later(self._window, self._flush)
            else:  # idle: no one else is coming, commit at once
                loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        if not batch:
            return
        try:
            self._commit(batch)
        finally:
            self._last_commit = asyncio.get_running_loop().time()

    def _commit(self, batch: list[tuple[Callable[[], Any], asyncio.Future]]) -> None:
        outcomes: list[tuple[asyncio.Future, Any, BaseException | None]] = []
        try:
            with self._store.group():
                for write, future in batch:
                    try:
                        with self._store.group():  # nested: a savepoint, undone on error
                            value = write()
                        outcomes.append((future, value, None))
                    except Exception as e:  # this write only: the store undid it
                        outcomes.append((future, None, e))
        except Exception as e:  # the commit failed: none of them is stored, none acknowledged
            log.error("committing %d results failed: %s", len(batch), e)
            for _write, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        self.groups += 1
        self.writes += len(batch)
        self.largest = max(self.largest, len(batch))
        for future, value, error in outcomes:
            if future.done():  # its handler was cancelled: stored all the same
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
