"""Progress of running algorithms (CONTRACTS §9): node `algorithm_progress` → researcher
`task_progress`, in seq order, each once; the latest in the run's view."""
from __future__ import annotations

import pytest
import socketio

from dummy_server.emitter_client import progress_line
from dummy_server.testing import RESEARCHER_KEYS, wait_until

pytestmark = pytest.mark.integration


def _progress(node, command, seq, fraction, message="", **extra):
    return node.sio.call("algorithm_progress", {
        "node_id": node.node_id, "run_id": command["run_id"], "task_id": command["task_id"],
        "seq": seq, "progress": fraction, "message": message, **extra}, timeout=10)


def test_progress_reaches_the_researcher_in_order_once_each(server, alice, nodes):
    sio = socketio.Client(reconnection=False)
    events = []
    sio.on("task_progress", events.append)
    sio.connect(server.url, auth={"api_key": RESEARCHER_KEYS["alice"]}, transports=["websocket"],
                wait_timeout=10)
    try:
        a = nodes(server.url, "node-a")
        task = alice.post(f"{server.url}/api/task", json={"image": "v6-demo/avg",
                                                           "nodes": ["node-a"]}, timeout=10).json()
        wait_until(lambda: a.commands, what="the command")
        cmd = a.commands[0]
        assert _progress(a, cmd, 1, 0.25, "a") == {"ok": True}
        assert _progress(a, cmd, 2, 0.5, "b") == {"ok": True}
        assert _progress(a, cmd, 2, 0.5, "b again") == {"ok": True}   # repeated: dropped
        assert _progress(a, cmd, 1, 0.25, "stale") == {"ok": True}    # older: dropped
        assert _progress(a, cmd, 3, None, "c") == {"ok": True}
        wait_until(lambda: len(events) == 3, what="three progress events")
        assert [(e["seq"], e["progress"], e["message"]) for e in events] == \
            [(1, 0.25, "a"), (2, 0.5, "b"), (3, None, "c")]
        assert events[0] == {"task_id": task["id"], "run_id": cmd["run_id"], "node_id": "node-a",
                             "seq": 1, "progress": 0.25, "message": "a"}
        run = alice.get(f"{server.url}/api/run/{cmd['run_id']}", timeout=10).json()
        assert run["progress"] == {"seq": 3, "progress": None, "message": "c"}
        bad = _progress(a, cmd, 4, 1.5)
        assert bad["ok"] is False and "progress" in bad["error"]
        foreign = nodes(server.url, "node-b")
        stolen = _progress(foreign, cmd, 9, 0.9)
        assert stolen["ok"] is False and "not a run of node node-b" in stolen["error"]
    finally:
        sio.disconnect()


def test_the_emitter_shows_a_progress_bar():
    line = progress_line({"task_id": 1, "run_id": 2, "node_id": "node-a", "progress": 0.5,
                          "message": "half\nway"})
    assert line == "task 1 run 2 on node-a: [##########..........]  50% half way"
    assert "[????" in progress_line({"task_id": 1, "run_id": 2, "node_id": "n", "progress": None})
