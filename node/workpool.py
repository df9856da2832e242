"""A fixed number of worker threads behind a bounded queue, for the node's slow I/O (API calls,
files) that the agent thread must not wait for.

A task is a function run on a worker; what it returns (if not None) is handed to `deliver`, which
for the agent puts it on its queue: workers never touch run state. A full queue makes `submit`
wait (back-pressure rather than unbounded memory), and never deadlocks, since workers never wait
for the submitter. Shutdown (the stop Event) ends the workers after their current task; queued
tasks are dropped, which is safe only for work that can be redone from the ledger and the
cluster after a restart (node.finishing keeps to that).

A task has a priority (lower first, then in order of submission): a run's clean-up (Job delete,
files) waits behind the reading of other runs' results, so at 1,000 runs ending at once the
results are not queued behind the removal of the runs that came before.

With 0 workers each task runs at once on the submitting thread and delivers there: the agent's
own loop then does everything in order (tests; a debugging aid).
"""
from __future__ import annotations

import logging
import itertools
import queue
import threading
import time
from typing import Any, Callable

from node import retry

log = logging.getLogger(__name__)

Task = Callable[[], Any]
POLL_SECONDS = 0.2  # how often a waiting worker or submitter looks at the stop Event


class WorkPool:
    def __init__(self, workers: int, queue_size: int, stop: threading.Event,
                 deliver: Callable[[Any], None], name: str = "pool"):
        self.workers = workers
        self.stop_event = stop
        self.deliver = deliver
        self.name = name
        self._queue: queue.PriorityQueue = queue.PriorityQueue(maxsize=queue_size)
        self._order = itertools.count()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(workers)]
        self._busy = 0  # tasks queued or running
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the workers to end (after the stop Event), all within one timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def submit(self, task: Task, priority: int = 0) -> None:
        """Queue a task; waits while the queue is full. Raises retry.Cancelled on shutdown."""
        if self.workers == 0:  # inline: errors and shutdown reach the caller as they are
            out = task()
            if out is not None:
                self.deliver(out)
            return
        with self._lock:
            self._busy += 1
            item = (priority, next(self._order), task)
        while True:
            if self.stop_event.is_set():
                self._done()
                raise retry.Cancelled()
            try:
                self._queue.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                continue

    def busy(self) -> int:
        """Tasks queued or running."""
        with self._lock:
            return self._busy

    def wait_idle(self, timeout: float) -> bool:
        """True once no task is queued or running (for tests and an orderly stop)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def _done(self) -> None:
        with self._idle:
            self._busy -= 1
            if self._busy == 0:
                self._idle.notify_all()

    def _work(self) -> None:
        while not self.stop_event.is_set():
            try:
                _, _, task = self._queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            try:
                if self._run(task) is False:
                    return
            finally:
                self._done()

    def _run(self, task: Task) -> bool:
        """Run one task and deliver what it returns. False: shutdown interrupted it."""
        try:
            out = task()
        except retry.Cancelled:
            return False
        except Exception:  # a bug in one task must not end the worker
            log.exception("%s: a task failed", self.name)
            return True
        if out is not None:
            self.deliver(out)
        return True
