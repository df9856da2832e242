"""The loop every controller of the local cluster shares: keys ``(namespace, name)`` queued at
most once each and synced one at a time, and timers that queue a key later (back-off, deadlines,
TTL), as client-go's work queue does for the real controllers."""
from __future__ import annotations

import abc
import asyncio
import logging

log = logging.getLogger(__name__)

Key = tuple[str, str]


class Reconciler(abc.ABC):
    kind = "object"  # for the log

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._pending: set[Key] = set()
        self._timers: dict[tuple[str, str, str], asyncio.TimerHandle] = {}

    @abc.abstractmethod
    def start(self) -> None:
        """Subscribe to the store and queue what exists."""

    @abc.abstractmethod
    def sync(self, namespace: str, name: str) -> None:
        """Bring one object's world in line with its spec."""

    def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    async def run(self) -> None:
        self.start()
        try:
            while True:
                key = await self._queue.get()
                self._pending.discard(key)
                try:
                    self.sync(*key)
                except Exception:  # one bad object must not stop the controller
                    log.exception("syncing %s %s/%s failed", self.kind, *key)
        finally:
            self.close()

    def _enqueue(self, key: Key) -> None:
        if key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)

    def _after(self, delay: float, key: Key, purpose: str) -> None:
        """Queue key in delay seconds; a later call for the same purpose replaces this one."""
        tkey = (*key, purpose)
        old = self._timers.pop(tkey, None)
        if old is not None:
            old.cancel()

        def fire() -> None:
            self._timers.pop(tkey, None)
            self._enqueue(key)
        self._timers[tkey] = asyncio.get_running_loop().call_later(max(delay, 0), fire)
