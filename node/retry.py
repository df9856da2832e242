"""The node's one retry policy: transient errors only, exponential back-off with jitter,
Retry-After honoured, and every wait cancellable by shutdown."""
from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

from node.errors import TransientClusterError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Cancelled(Exception):
    """Raised when shutdown interrupts a wait."""


@dataclass(frozen=True)
class RetryPolicy:
    initial: float = 0.2
    maximum: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5          # each delay is scaled by a factor in [1 - jitter, 1]
    max_attempts: int | None = 8  # None: retry until cancelled

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """Back-off delays: initial, initial*multiplier, ... capped at maximum, with jitter."""
        rng = rng or random.Random()
        delay = self.initial
        attempt = 1
        while self.max_attempts is None or attempt < self.max_attempts:
            yield delay * (1 - self.jitter * rng.random())
            delay = min(delay * self.multiplier, self.maximum)
            attempt += 1


DEFAULT_POLICY = RetryPolicy()
FOREVER = RetryPolicy(max_attempts=None)


def wait(stop: threading.Event | None, seconds: float) -> None:
    """Sleep that shutdown can cut short (raises Cancelled)."""
    if stop is None:
        threading.Event().wait(seconds)
        return
    if stop.wait(seconds):
        raise Cancelled()


def call(fn: Callable[[], T], *, what: str, stop: threading.Event | None = None,
         policy: RetryPolicy = DEFAULT_POLICY,
         transient: tuple[type[BaseException], ...] = (TransientClusterError,)) -> T:
    """Call fn, retrying on transient errors per policy. Other errors propagate at once.

    A transient error carrying `retry_after` (seconds) waits at least that long.
    """
    delays = policy.delays()
    while True:
        try:
            return fn()
        except transient as e:
            delay = next(delays, None)
            if delay is None:
                raise
            retry_after = getattr(e, "retry_after", None)
            if retry_after:
                delay = max(delay, min(float(retry_after), policy.maximum * 6))
            log.warning("%s failed (%s); retrying in %.2fs", what, e, delay)
            wait(stop, delay)
