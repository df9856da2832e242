"""ServerLink.call_many (node/server_link.py): results go out pipelined, at most `window`
unanswered at once, each answer matched to its item; a server that stops answering turns the
unanswered ones into errors after the timeout, and what was never sent says so."""
from __future__ import annotations

import threading

from dummy_server.testing import wait_until
from node.errors import ServerLinkError
from node.heartbeat import HeartbeatPolicy
from tests.node.test_server_link_heartbeat import link_to, server  # noqa: F401 (fixtures)

PATIENT = HeartbeatPolicy(interval=5, suspect_after=3, fail_after=10)  # no reconnect here


def _items(n: int) -> list[dict]:
    return [{"run_id": i, "task_id": 1, "status": "completed"} for i in range(n)]


def test_items_go_out_in_order_with_at_most_the_window_unanswered(server, link_to):
    link = link_to(PATIENT)
    wait_until(link.connected.is_set, what="connected")
    server.stall()
    answers: list = []
    caller = threading.Thread(target=lambda: answers.extend(
        link.call_many("run_result", _items(10), timeout=30, window=4)))
    caller.start()
    wait_until(lambda: len(server.results) == 4, what="a window of 4 at the server")
    assert caller.is_alive()  # it waits for answers before sending a fifth
    server.resume()
    caller.join(30)
    assert not caller.is_alive()
    assert server.results[:4] == [0, 1, 2, 3] and sorted(server.results) == list(range(10))
    assert [a["run_id"] for a in answers] == list(range(10))
    assert len(server.results) == 10


def test_a_server_that_stops_answering_gives_errors_for_what_it_did_not_answer(server, link_to):
    link = link_to(PATIENT)
    wait_until(link.connected.is_set, what="connected")
    server.stall()
    answers = link.call_many("run_result", _items(6), timeout=0.5, window=2)
    assert all(isinstance(a, ServerLinkError) for a in answers)
    assert [str(a).split(":")[0] for a in answers] == \
        ["run_result not acknowledged within 0.5 s"] * 2 + ["run_result not sent"] * 4
    server.resume()
    assert server.results == [0, 1]  # the rest was never sent: the outbox keeps them
