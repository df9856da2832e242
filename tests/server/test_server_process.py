"""The dummy server as a real process: nodes, researchers, persistence and the HTTP API."""
from __future__ import annotations

import pytest
import requests
import socketio

from dummy_server.testing import NODE_KEYS, RESEARCHER_KEYS, wait_until

pytestmark = pytest.mark.integration


def _task(session, server, **body):
    body.setdefault("image", "v6-demo/avg")
    resp = session.post(f"{server.url}/api/task", json=body, timeout=10)
    assert resp.status_code == 201, resp.text
    return resp.json()


def _refusal(url, auth):
    sio = socketio.Client(reconnection=False)
    reasons = []
    sio.on("connect_error", reasons.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=10)
    sio.disconnect()
    return reasons


def test_wrong_or_missing_key_is_refused_with_the_reason(server):
    assert _refusal(server.url, {"api_key": "not-a-key"}) == [{"message": "invalid api key"}]
    assert _refusal(server.url, None) == [{"message": "invalid api key"}]
    r = requests.get(f"{server.url}/api/version", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert r.status_code == 401 and "invalid" in r.json()["error"]
    r = requests.get(f"{server.url}/api/version",
                     headers={"Authorization": f"Bearer {NODE_KEYS['node-a']}"}, timeout=10)
    assert r.status_code == 403
    assert requests.get(f"{server.url}/api/version", timeout=10).status_code == 401


def test_two_nodes_at_once_each_get_only_their_own_commands(server, alice, nodes):
    a, b = nodes(server.url, "node-a"), nodes(server.url, "node-b")
    both = _task(alice, server, databases=["default"], input={"x": 1}, arguments=["Age"],
                 resources={"cpu": "500m", "memory": "256Mi", "gpu": 0}, deadline_seconds=60)
    only_b = _task(alice, server, nodes=["node-b"])
    marker_a = _task(alice, server, nodes=["node-a"])
    wait_until(lambda: len(a.commands) == 2, what="node-a's two commands")
    wait_until(lambda: len(b.commands) == 2, what="node-b's two commands")
    # node-b's only task went out before node-a's marker, so node-a would have seen it by now
    assert [c["task_id"] for c in a.commands] == [both["id"], marker_a["id"]]
    assert [c["task_id"] for c in b.commands] == [both["id"], only_b["id"]]
    run_of = {r["node_id"]: r["id"] for r in both["runs"]}
    assert a.commands[0]["run_id"] == run_of["node-a"] != b.commands[0]["run_id"] == run_of["node-b"]
    command = a.commands[0]
    assert command["input"] == {"x": 1} and command["databases"] == ["default"]
    assert command["arguments"] == ["Age"] and command["deadline_seconds"] == 60
    assert command["resources"] == {"cpu": "500m", "memory": "256Mi", "gpu": 0}
    assert command["parent_id"] is None and command["token"].count(".") == 1
    nodes_view = alice.get(f"{server.url}/api/node", timeout=10).json()["nodes"]
    assert {n["id"]: n["online"] for n in nodes_view} == {"node-a": True, "node-b": True}


def test_pending_runs_are_resent_on_connect_but_started_ones_are_not(server, alice, nodes):
    first = _task(alice, server, nodes=["node-a"])
    a = nodes(server.url, "node-a")
    wait_until(lambda: len(a.commands) == 1, what="the pending command on connect")
    assert a.commands[0]["task_id"] == first["id"]
    assert a.status(a.commands[0], "active") == {"ok": True}
    a.close()
    wait_until(lambda: not alice.get(f"{server.url}/api/node", timeout=10).json()["nodes"][0]["online"],
               what="node-a offline")
    marker = _task(alice, server, nodes=["node-a"])
    again = nodes(server.url, "node-a")
    wait_until(lambda: again.commands, what="the marker command")
    assert [c["task_id"] for c in again.commands] == [marker["id"]]


def test_state_and_results_survive_a_restart(server, alice, nodes):
    created = _task(alice, server, nodes=["node-a"], name="avg")
    a = nodes(server.url, "node-a")
    wait_until(lambda: a.commands, what="the command")
    for status in ("initializing", "active", "completed"):
        assert a.status(a.commands[0], status, f"now {status}") == {"ok": True}
    assert a.result(a.commands[0], "completed", "41.5", "done") == {"ok": True, "duplicate": False}
    a.close()
    server.restart()
    task = alice.get(f"{server.url}/api/task/{created['id']}", timeout=10).json()
    assert task["status"] == "completed" and task["name"] == "avg"
    run = alice.get(f"{server.url}/api/run/{created['runs'][0]['id']}", timeout=10).json()
    assert [h["status"] for h in run["history"]] == ["pending", "initializing", "active", "completed"]
    assert run["history"][1]["detail"] == "now initializing"
    assert run["result"] == {"data": "41.5", "logs": "done", "status": "completed"}
    assert task["runs"] == [run]
    # a completed run is not sent again after the restart
    b = nodes(server.url, "node-a")
    marker = _task(alice, server, nodes=["node-a"])
    wait_until(lambda: b.commands, what="the marker command")
    assert [c["task_id"] for c in b.commands] == [marker["id"]]


def test_duplicate_results_and_late_statuses_change_nothing(server, alice, nodes):
    created = _task(alice, server, nodes=["node-a"])
    a = nodes(server.url, "node-a")
    wait_until(lambda: a.commands, what="the command")
    cmd = a.commands[0]
    assert a.result(cmd, "completed", "1", "first") == {"ok": True, "duplicate": False}
    assert a.result(cmd, "failed", "2", "second") == {"ok": True, "duplicate": True}
    assert a.status(cmd, "killed by user") == {"ok": True}  # accepted, but ignored
    run = alice.get(f"{server.url}/api/run/{created['runs'][0]['id']}", timeout=10).json()
    assert run["status"] == "completed"
    assert run["result"] == {"data": "1", "logs": "first", "status": "completed"}
    assert [h["status"] for h in run["history"]] == ["pending", "completed"]


def test_results_for_unknown_or_foreign_runs_are_refused(server, alice, nodes):
    created = _task(alice, server, nodes=["node-a"])
    a, b = nodes(server.url, "node-a"), nodes(server.url, "node-b")
    wait_until(lambda: a.commands, what="the command")
    stolen = b.result(a.commands[0], "completed", "forged")
    assert stolen["ok"] is False and "not a run of node node-b" in stolen["error"]
    unknown = a.result({"run_id": 987654}, "completed", "x")
    assert unknown["ok"] is False and "987654" in unknown["error"]
    assert b.status(a.commands[0], "active")["ok"] is False
    bad = a.result({"run_id": a.commands[0]["run_id"]}, "finished-ish", "x")
    assert bad["ok"] is False and "unknown status" in bad["error"]
    run = alice.get(f"{server.url}/api/run/{created['runs'][0]['id']}", timeout=10).json()
    assert run["result"] is None and run["status"] == "pending"


def _researcher(server, name):
    sio = socketio.Client(reconnection=False)
    events = []
    sio.on("task_status", lambda d: events.append(("task_status", d)))
    sio.on("task_result", lambda d: events.append(("task_result", d)))
    sio.on("command_error", lambda d: events.append(("command_error", d)))
    sio.connect(server.url, auth={"api_key": RESEARCHER_KEYS[name]}, transports=["websocket"],
                wait_timeout=10)
    return sio, events


def test_researchers_get_events_of_their_own_tasks(server, alice, nodes):
    alice_sio, alice_events = _researcher(server, "alice")
    bob_sio, bob_events = _researcher(server, "bob")
    try:
        a = nodes(server.url, "node-a")
        mine = _task(alice, server, nodes=["node-a"])
        wait_until(lambda: a.commands, what="the command")
        a.status(a.commands[0], "active", "running")
        a.result(a.commands[0], "completed", {"mean": 2})
        run_id = mine["runs"][0]["id"]
        wait_until(lambda: len(alice_events) == 2, what="alice's events")
        assert alice_events == [
            ("task_status", {"task_id": mine["id"], "run_id": run_id, "node_id": "node-a",
                             "status": "active", "detail": "running"}),
            ("task_result", {"task_id": mine["id"], "run_id": run_id, "node_id": "node-a",
                             "status": "completed", "data": {"mean": 2}, "logs": ""})]
        with requests.Session() as bob:
            bob.headers["Authorization"] = f"Bearer {RESEARCHER_KEYS['bob']}"
            theirs = _task(bob, server, nodes=["node-a"])
            wait_until(lambda: len(a.commands) == 2, what="bob's command")
            a.status(a.commands[1], "active")
            wait_until(lambda: bob_events, what="bob's event")
            assert [e[1]["task_id"] for e in bob_events] == [theirs["id"]]
            assert len(alice_events) == 2
            forbidden = bob.get(f"{server.url}/api/task/{mine['id']}", timeout=10)
            assert forbidden.status_code == 403 and "another researcher" in forbidden.json()["error"]
    finally:
        alice_sio.disconnect()
        bob_sio.disconnect()


def test_legacy_command_request_is_relayed_unchanged(server, alice, nodes):
    a, b = nodes(server.url, "node-a"), nodes(server.url, "node-b")
    sio, events = _researcher(server, "alice")
    try:
        payload = {"run_id": 33333312,
                   "task_info": {"arg1": "/app/input/csv/default", "arg2": "Age",
                                 "arg3": "/app/output/avg.txt"},
                   "image": "v6-demo/avg", "docker_input": "input1",
                   "tmp_vol_name": "example-tmp-vol", "token": "example_token",
                   "databases_to_use": ["default"]}
        ack = sio.call("command_request", {**payload, "target_nodes": ["node-a", "node-b"]}, timeout=10)
        assert ack == {"ok": True, "task_id": 33333312, "nodes": ["node-a", "node-b"]}
        wait_until(lambda: a.commands and b.commands, what="the relayed payload")
        assert a.commands == [payload] and b.commands == [payload]
        again = sio.call("command_request", payload, timeout=10)
        assert again["ok"] is False and "already used" in again["error"]
        wait_until(lambda: events, what="command_error")
        assert events[0][0] == "command_error" and events[0][1]["run_id"] == 33333312
        a.result(a.commands[0], "completed", "40.0")
        ambiguous = alice.get(f"{server.url}/api/run/33333312", timeout=10)
        assert ambiguous.status_code == 400 and "node_id" in ambiguous.json()["error"]
        run = alice.get(f"{server.url}/api/run/33333312?node_id=node-a", timeout=10).json()
        assert run["result"]["data"] == "40.0" and run["node_id"] == "node-a"
        task = alice.get(f"{server.url}/api/task/33333312", timeout=10).json()
        assert task["kind"] == "legacy" and [r["node_id"] for r in task["runs"]] == ["node-a", "node-b"]
        # later rich runs never reuse the legacy id
        later = _task(alice, server, nodes=["node-a"])
        assert later["runs"][0]["id"] > 33333312
    finally:
        sio.disconnect()


@pytest.mark.parametrize("body, status, message", [
    ({}, 400, "image"),
    ({"image": "   "}, 400, "image"),
    ({"image": "x", "databases": ["Bad Label"]}, 400, "databases[0]"),
    ({"image": "x", "databases": "default"}, 400, "databases"),
    ({"image": "x", "arguments": [1]}, 400, "arguments[0]"),
    ({"image": "x", "nodes": ["node-z"]}, 400, "unknown node"),
    ({"image": "x", "nodes": []}, 400, "at least one node"),
    ({"image": "x", "colour": "red"}, 400, "unknown keys: colour"),
    ({"image": "x", "resources": {"gpu": -1}}, 400, "resources.gpu"),
    ([1, 2], 400, "JSON object"),
])
def test_bad_task_bodies_get_clear_errors(server, alice, body, status, message):
    resp = alice.post(f"{server.url}/api/task", json=body, timeout=10)
    assert resp.status_code == status and message in resp.json()["error"]


def test_body_limits_and_lookups(server, alice):
    big = alice.post(f"{server.url}/api/task", data=b"{" + b" " * 2_000_000 + b"}",
                     headers={"Content-Type": "application/json"}, timeout=10)
    assert big.status_code == 413 and "larger" in big.json()["error"]
    chunked = alice.post(f"{server.url}/api/task", data=iter([b" " * 700_000] * 3), timeout=10)
    assert chunked.status_code == 413 and "larger than 1048576 bytes" in chunked.json()["error"]
    not_json = alice.post(f"{server.url}/api/task", data=b"{nope", timeout=10)
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    assert alice.get(f"{server.url}/api/task/424242", timeout=10).status_code == 404
    assert alice.get(f"{server.url}/api/task/abc", timeout=10).status_code == 400
    assert alice.get(f"{server.url}/api/run/0", timeout=10).status_code == 404
    assert alice.get(f"{server.url}/api/elsewhere", timeout=10).json() == {"error": "Not Found"}
