"""Which nodes are reachable, as the server sees it: a small pure state machine, no I/O.

    offline ──(connect / sign of life)──▶ alive ──(suspect_after intervals silent)──▶ suspected
       ▲                                   ▲                                            │
       │                                   └──────────── any sign of life ──────────────┤
       └──── disconnect (at once) or offline_after intervals silent ◀───────────────────┘

A sign of life is a ``node_heartbeat`` or any other event from the node. One late beat moves a
node at most to ``suspected``; a node is ``offline`` only after ``offline_after`` silent intervals
or when its last Socket.IO session closes. A node that is offline while its session is still open
(a half-open connection, a stalled node) comes back with its next beat.

The node's own view of the server uses the same rules (``node/heartbeat.py``); the server image
ships without the node package, hence this small sibling. Times are the caller's (wall clock,
unix seconds: they are shown to researchers), which keeps this testable without sleeping.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import HeartbeatSettings

ALIVE = "alive"
SUSPECTED = "suspected"
OFFLINE = "offline"
STATES = (ALIVE, SUSPECTED, OFFLINE)


@dataclass(frozen=True)
class Change:
    """A node moved from ``previous`` to ``state`` at ``since``."""
    node_id: str
    state: str
    previous: str
    since: float
    last_seen: float | None

    def event(self) -> dict:
        return {"node_id": self.node_id, "state": self.state, "previous": self.previous,
                "since": self.since, "last_seen": self.last_seen}


@dataclass
class NodePresence:
    state: str = OFFLINE
    since: float | None = None       # when it entered ``state`` (None: unknown, never seen)
    last_seen: float | None = None   # its last sign of life
    sessions: int = 0                # open Socket.IO sessions of this node


@dataclass
class Presence:
    settings: HeartbeatSettings
    nodes: dict[str, NodePresence] = field(default_factory=dict)

    @classmethod
    def starting(cls, settings: HeartbeatSettings,
                 last_seen: dict[str, float | None]) -> "Presence":
        """A server that just started: every node offline, since it was last seen (if known)."""
        return cls(settings, {n: NodePresence(since=t, last_seen=t) for n, t in last_seen.items()})

    def get(self, node_id: str) -> NodePresence:
        return self.nodes.setdefault(node_id, NodePresence())

    def connected(self, node_id: str, now: float) -> Change | None:
        self.get(node_id).sessions += 1
        return self.seen(node_id, now)

    def seen(self, node_id: str, now: float) -> Change | None:
        """A sign of life over an open session: the node is alive (again)."""
        node = self.get(node_id)
        node.last_seen = now if node.last_seen is None else max(node.last_seen, now)
        if node.sessions <= 0:
            return None  # a late event of a closed session says nothing about the node now
        return self._move(node_id, node, ALIVE, now)

    def disconnected(self, node_id: str, now: float) -> Change | None:
        node = self.get(node_id)
        node.sessions = max(0, node.sessions - 1)
        if node.sessions:
            return None
        return self._move(node_id, node, OFFLINE, now)

    def missed(self, node_id: str, now: float) -> int:
        """Whole beat intervals since the node's last sign of life."""
        node = self.get(node_id)
        if node.last_seen is None:
            return 0
        return max(0, int((now - node.last_seen) / self.settings.interval_seconds))

    def tick(self, now: float) -> list[Change]:
        """Move connected nodes by their silence; returns the changes."""
        changes = []
        for node_id, node in self.nodes.items():
            if not node.sessions or node.state == OFFLINE:
                continue
            missed = self.missed(node_id, now)
            change = None
            if missed >= self.settings.offline_after:
                change = self._move(node_id, node, OFFLINE, now)
            elif missed >= self.settings.suspect_after and node.state == ALIVE:
                change = self._move(node_id, node, SUSPECTED, now)
            if change:
                changes.append(change)
        return changes

    def next_check(self) -> float | None:
        """The earliest time at which ``tick`` may change something (None: nothing to watch)."""
        due = []
        s = self.settings
        for node in self.nodes.values():
            if not node.sessions or node.state == OFFLINE or node.last_seen is None:
                continue
            after = s.suspect_after if node.state == ALIVE else s.offline_after
            due.append(node.last_seen + after * s.interval_seconds)
        return min(due, default=None)

    def view(self, node_id: str) -> dict:
        node = self.get(node_id)
        return {"online": node.state != OFFLINE, "state": node.state, "since": node.since,
                "last_seen": node.last_seen}

    @staticmethod
    def _move(node_id: str, node: NodePresence, state: str, now: float) -> Change | None:
        if node.state == state:
            return None
        previous, node.state, node.since = node.state, state, now
        return Change(node_id, state, previous, now, node.last_seen)
