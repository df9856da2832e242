"""Liveness of one peer as seen by the node: a small pure state machine, no I/O, no clock.

Used for each run's sidecar (``node/live.py``: beats are its frames) and for the central server
(``node/server_link.py``: beats are the server's acknowledgements of the node's heartbeats).

    alive ──(suspect_after beats missed)──▶ suspected ──(fail_after beats missed)──▶ failed
      ▲                                        │                                      │
      └────────────── any beat ────────────────┴──────────────── any beat ───────────┘

One late beat moves a peer at most to ``suspected``; only a silence of ``fail_after`` intervals
marks it ``failed`` (unresponsive). A beat from a suspected or failed peer brings it back to
``alive`` at once. The caller passes the time (``time.monotonic()``), which keeps this testable.
"""
from __future__ import annotations

from dataclasses import dataclass

ALIVE = "alive"
SUSPECTED = "suspected"
FAILED = "failed"
STATES = (ALIVE, SUSPECTED, FAILED)


@dataclass(frozen=True)
class HeartbeatPolicy:
    interval: float = 1.0      # seconds between the peer's beats
    suspect_after: int = 3     # missed beats before a run is suspected
    fail_after: int = 6        # missed beats before it is failed (unresponsive)

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError(f"interval must be positive, got {self.interval}")
        if not 1 <= self.suspect_after < self.fail_after:
            raise ValueError(f"need 1 <= suspect_after < fail_after, got "
                             f"{self.suspect_after} and {self.fail_after}")


@dataclass
class Liveness:
    """The state of one peer. ``beat`` and ``tick`` return the new state when it changed,
    else None, so the caller reports transitions only."""
    policy: HeartbeatPolicy
    last_beat: float
    state: str = ALIVE
    beats: int = 0

    @classmethod
    def start(cls, policy: HeartbeatPolicy, now: float, grace: float = 0.0) -> "Liveness":
        """Following begins at ``now``; a peer still starting up (a sidecar whose process may
        just have been started) gets ``grace`` seconds more before its silence counts."""
        return cls(policy=policy, last_beat=now + grace)

    def missed(self, now: float) -> int:
        """Whole intervals since the last beat."""
        return max(0, int((now - self.last_beat) / self.policy.interval))

    def beat(self, now: float) -> str | None:
        self.beats += 1
        self.last_beat = max(self.last_beat, now)
        return self._move(ALIVE)

    def tick(self, now: float) -> str | None:
        missed = self.missed(now)
        if missed >= self.policy.fail_after:
            return self._move(FAILED)
        if missed >= self.policy.suspect_after and self.state == ALIVE:
            return self._move(SUSPECTED)
        return None

    def _move(self, state: str) -> str | None:
        if state == self.state:
            return None
        self.state = state
        return state
