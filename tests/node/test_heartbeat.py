"""The sidecar liveness state machine (node/heartbeat.py): pure, driven by a fake clock."""
from __future__ import annotations

import pytest

from node.heartbeat import ALIVE, FAILED, SUSPECTED, HeartbeatPolicy, Liveness

POLICY = HeartbeatPolicy(interval=1.0, suspect_after=3, fail_after=6)


def test_a_fresh_sidecar_is_alive_and_regular_beats_keep_it_so():
    lv = Liveness.start(POLICY, now=100.0)
    assert lv.state == ALIVE
    for t in range(101, 120):
        assert lv.beat(float(t)) is None
        assert lv.tick(t + 0.9) is None
    assert lv.state == ALIVE and lv.beats == 19


def test_one_late_beat_does_not_flap_the_status():
    lv = Liveness.start(POLICY, now=0.0)
    assert lv.tick(2.9) is None          # two intervals late: still alive
    assert lv.beat(2.95) is None
    assert lv.tick(5.0) is None
    assert lv.state == ALIVE


def test_silence_moves_alive_to_suspected_then_failed_once_each():
    lv = Liveness.start(POLICY, now=0.0)
    changes = [lv.tick(t / 10) for t in range(0, 100)]
    assert [c for c in changes if c] == [SUSPECTED, FAILED]
    assert changes.index(SUSPECTED) == 30 and changes.index(FAILED) == 60
    assert lv.missed(9.9) == 9


def test_a_beat_brings_a_suspected_or_failed_sidecar_back():
    lv = Liveness.start(POLICY, now=0.0)
    assert lv.tick(3.0) == SUSPECTED
    assert lv.beat(3.1) == ALIVE
    assert lv.tick(9.2) == FAILED
    assert lv.beat(9.3) == ALIVE
    assert lv.tick(9.4) is None


def test_a_long_silence_goes_straight_to_failed():
    lv = Liveness.start(POLICY, now=0.0)
    assert lv.tick(60.0) == FAILED
    assert lv.tick(61.0) is None


def test_a_beat_with_an_older_timestamp_does_not_move_the_clock_back():
    lv = Liveness.start(POLICY, now=10.0)
    lv.beat(5.0)
    assert lv.last_beat == 10.0


@pytest.mark.parametrize("kwargs", [dict(interval=0), dict(suspect_after=0),
                                    dict(suspect_after=4, fail_after=4)])
def test_bad_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        HeartbeatPolicy(**kwargs)


def test_a_starting_sidecar_gets_a_grace_period_before_its_first_beat():
    lv = Liveness.start(POLICY, now=0.0, grace=3.0)
    assert lv.tick(5.9) is None          # 5.9s: without the grace it would be suspected
    assert lv.tick(6.0) == SUSPECTED
    assert lv.beat(6.1) == ALIVE
