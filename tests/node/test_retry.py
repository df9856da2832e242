import random
import threading

import pytest

from node import retry
from node.errors import ClusterError, TransientClusterError


def test_delays_grow_to_the_cap_with_jitter_below_the_nominal_value():
    policy = retry.RetryPolicy(initial=0.1, maximum=1.0, multiplier=2.0, jitter=0.5,
                               max_attempts=8)
    delays = list(policy.delays(random.Random(1)))
    nominal = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert len(delays) == len(nominal)
    for got, top in zip(delays, nominal):
        assert top * 0.5 <= got <= top


def test_transient_errors_are_retried_until_success():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TransientClusterError("503")
        return "ok"

    policy = retry.RetryPolicy(initial=0.001, maximum=0.002, max_attempts=5)
    assert retry.call(flaky, what="flaky", policy=policy) == "ok"
    assert len(calls) == 3


def test_permanent_errors_are_not_retried():
    calls = []

    def broken():
        calls.append(1)
        raise ClusterError("422 invalid")

    with pytest.raises(ClusterError):
        retry.call(broken, what="broken", policy=retry.RetryPolicy(initial=0.001))
    assert len(calls) == 1


def test_gives_up_after_max_attempts_with_the_last_error():
    calls = []

    def down():
        calls.append(1)
        raise TransientClusterError(f"503 #{len(calls)}")

    with pytest.raises(TransientClusterError, match="#3"):
        retry.call(down, what="down", policy=retry.RetryPolicy(initial=0.001, max_attempts=3))
    assert len(calls) == 3


def test_retry_after_is_honoured(monkeypatch):
    waited = []
    monkeypatch.setattr(retry, "wait", lambda stop, seconds: waited.append(seconds))
    attempts = iter([TransientClusterError("429", retry_after=7), None])

    def throttled():
        e = next(attempts)
        if e:
            raise e
        return "ok"

    assert retry.call(throttled, what="throttled",
                      policy=retry.RetryPolicy(initial=0.01, maximum=5)) == "ok"
    assert waited == [7]


def test_shutdown_cancels_a_wait():
    stop = threading.Event()
    stop.set()
    with pytest.raises(retry.Cancelled):
        retry.call(lambda: (_ for _ in ()).throw(TransientClusterError("503")), what="x",
                   stop=stop, policy=retry.RetryPolicy(initial=60))
