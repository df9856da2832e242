"""The server's view of node liveness (dummy_server/presence.py): pure, times passed in."""
from __future__ import annotations

import pytest

from dummy_server.config import HeartbeatSettings, load_config
from dummy_server.errors import ConfigError
from dummy_server.presence import ALIVE, OFFLINE, SUSPECTED, Presence

SETTINGS = HeartbeatSettings(interval_seconds=1.0, suspect_after=3, offline_after=6)


def _states(changes):
    return [(c.node_id, c.previous, c.state) for c in changes if c]


def test_a_node_is_offline_until_it_connects_then_alive():
    p = Presence.starting(SETTINGS, {"node-a": None, "node-b": 50.0})
    assert p.view("node-a") == {"online": False, "state": OFFLINE, "since": None, "last_seen": None}
    assert p.view("node-b")["since"] == 50.0
    change = p.connected("node-a", 100.0)
    assert (change.previous, change.state, change.since, change.last_seen) == \
        (OFFLINE, ALIVE, 100.0, 100.0)
    assert p.view("node-a") == {"online": True, "state": ALIVE, "since": 100.0, "last_seen": 100.0}


def test_regular_beats_and_one_late_beat_keep_a_node_alive():
    p = Presence(SETTINGS)
    p.connected("node-a", 0.0)
    changes = []
    for t in [1.0, 2.0, 4.9, 5.5, 6.5]:   # 2.9 s late once: still fewer than 3 intervals
        changes += p.tick(t - 0.01)
        changes.append(p.seen("node-a", t))
    assert _states(changes) == []
    assert p.view("node-a")["state"] == ALIVE


def test_silence_moves_alive_to_suspected_then_offline_once_each():
    p = Presence(SETTINGS)
    p.connected("node-a", 0.0)
    changes = [c for t in range(0, 100) for c in p.tick(t / 10)]
    assert _states(changes) == [("node-a", ALIVE, SUSPECTED), ("node-a", SUSPECTED, OFFLINE)]
    assert [c.since for c in changes] == [3.0, 6.0]
    assert all(c.last_seen == 0.0 for c in changes)
    assert p.view("node-a") == {"online": False, "state": OFFLINE, "since": 6.0, "last_seen": 0.0}


def test_a_beat_brings_a_suspected_or_silent_offline_node_back():
    p = Presence(SETTINGS)
    p.connected("node-a", 0.0)
    p.tick(3.0)
    assert _states([p.seen("node-a", 3.5)]) == [("node-a", SUSPECTED, ALIVE)]
    p.tick(20.0)
    assert p.view("node-a")["state"] == OFFLINE
    assert _states([p.seen("node-a", 21.0)]) == [("node-a", OFFLINE, ALIVE)]


def test_a_disconnect_is_offline_at_once_but_only_when_the_last_session_ends():
    p = Presence(SETTINGS)
    p.connected("node-a", 0.0)
    assert p.connected("node-a", 1.0) is None      # a second session (a reconnect overlapping)
    assert p.disconnected("node-a", 2.0) is None
    assert p.view("node-a")["state"] == ALIVE
    change = p.disconnected("node-a", 2.5)
    assert (change.previous, change.state, change.since) == (ALIVE, OFFLINE, 2.5)
    # a late event of the closed session does not bring it back, and nothing ticks it further
    assert p.seen("node-a", 2.6) is None
    assert p.tick(100.0) == []
    assert p.view("node-a")["last_seen"] == 2.6


def test_next_check_is_when_the_next_state_change_is_due():
    p = Presence(SETTINGS)
    assert p.next_check() is None                  # nobody connected: nothing to watch
    p.connected("node-a", 10.0)
    p.connected("node-b", 11.0)
    assert p.next_check() == 13.0                  # node-a suspected at 10 + 3 intervals
    p.seen("node-a", 12.0)
    assert p.next_check() == 14.0                  # now node-b first
    p.tick(14.0)
    assert p.view("node-b")["state"] == SUSPECTED
    assert p.next_check() == 15.0                  # node-a at 12 + 3; node-b offline at 17
    p.disconnected("node-a", 14.5)
    assert p.next_check() == 17.0


def test_a_beat_with_an_older_time_does_not_move_last_seen_back():
    p = Presence(SETTINGS)
    p.connected("node-a", 10.0)
    p.seen("node-a", 5.0)
    assert p.view("node-a")["last_seen"] == 10.0


@pytest.mark.parametrize("kwargs", [dict(interval_seconds=0), dict(suspect_after=0),
                                    dict(suspect_after=4, offline_after=4)])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ConfigError):
        HeartbeatSettings(**kwargs)


BASE = """
token_secret: a-long-enough-secret-123
nodes: [{id: node-a, api_key: node-a-key-1}]
"""


def test_heartbeat_settings_load_from_the_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    assert load_config(path, env={}).heartbeat == HeartbeatSettings()
    path.write_text(BASE + "heartbeat: {interval_seconds: 0.2, suspect_after: 2, "
                           "offline_after: 4}\n")
    assert load_config(path, env={}).heartbeat == HeartbeatSettings(0.2, 2, 4)


@pytest.mark.parametrize("extra, message", [
    ("heartbeat: 5\n", "heartbeat: expected a mapping"),
    ("heartbeat: {interval: 5}\n", "unknown heartbeat keys: interval"),
    ("heartbeat: {interval_seconds: fast}\n", "heartbeat.interval_seconds: expected a number"),
    ("heartbeat: {interval_seconds: -1}\n", "heartbeat.interval_seconds: must be positive"),
    ("heartbeat: {suspect_after: 2.5}\n", "heartbeat.suspect_after: expected an integer"),
    ("heartbeat: {suspect_after: 6}\n", "need 1 <= suspect_after < offline_after"),
])
def test_bad_heartbeat_config_is_refused_clearly(tmp_path, extra, message):
    path = tmp_path / "c.yaml"
    path.write_text(BASE + extra)
    with pytest.raises(ConfigError, match=message):
        load_config(path, env={})
