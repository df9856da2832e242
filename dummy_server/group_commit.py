"""Group commit: the results that reach the server in one turn of its event loop are stored in one
transaction, and each is acknowledged only once that transaction is on disk.

A node sends up to 64 results at once (CONTRACTS: run_result is pipelined); one fsync'd commit
each made the server, not the node, the bound of 1,000 finishing runs (~3 ms each, serial).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, TypeVar

from .store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")


class GroupCommit:
    def __init__(self, store: Store):
        self._store = store
        self._queue: list[tuple[Callable[[], Any], asyncio.Future]] = []
        self.groups = 0  # commits made, for tests and logs
        self.largest = 0

    async def run(self, write: Callable[[], T]) -> T:
        """Run ``write`` (synchronous, store writes only) in the next group; its return value
        once the group is committed, or its own exception (the others still commit)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((write, future))
        if len(self._queue) == 1:
            # scheduled behind the handlers already ready to run, which then join this group
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
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
        self.largest = max(self.largest, len(batch))
        for future, value, error in outcomes:
            if future.done():  # its handler was cancelled: stored all the same
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
