"""Fuzzing the dummy server: HTTP API bodies, paths, methods and auth headers, and the Socket.IO
events nodes and researchers send. Never a 5xx, always a JSON error body, and the server keeps
answering valid requests afterwards."""
from __future__ import annotations

import json
import time

import pytest
import requests
import socketio
from hypothesis import given
from hypothesis import strategies as st

from dummy_server import tokens
from dummy_server.testing import NODE_KEYS, RESEARCHER_KEYS, TOKEN_SECRET, ServerProcess
from tests.reliability.payloads import (BAD_IDS, TRAVERSAL, _nest, binary_json, huge_strings,
                                        json_values, odd_text)
from tests.reliability.settings import examples, fuzz_settings, record

pytestmark = pytest.mark.integration
ALICE = f"Bearer {RESEARCHER_KEYS['alice']}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("fuzz-server")).start()
    yield proc
    proc.stop()


@pytest.fixture
def session():
    with requests.Session() as s:
        yield s


def assert_clean_answer(resp: requests.Response) -> dict | list:
    assert resp.status_code < 500, f"{resp.status_code}: {resp.text[:300]}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    body = resp.json()
    if resp.status_code >= 400:
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
        assert len(body["error"]) < 2000, "errors are short, whatever the input"
    return body


VALID_BODY = {"image": "v6-demo/avg", "input": {"column": "Age"}, "databases": ["default"],
              "nodes": ["node-a"], "name": "fuzz"}
BODY_KEYS = ["image", "input", "arguments", "databases", "nodes", "name", "resources",
             "deadline_seconds", "parent_id", "run_id", "", "IMAGE"]
wild = (json_values | st.sampled_from(TRAVERSAL) | st.sampled_from(BAD_IDS) | odd_text
        | huge_strings.filter(lambda s: len(s) < 2_000_000))


@st.composite
def task_bodies(draw):
    kind = draw(st.sampled_from(["mutated", "mutated", "random", "raw"]))
    if kind == "raw":
        return draw(st.binary(max_size=200) | st.sampled_from(
            [b"", b"{", b"null", b"[]", b"\xff\xfe", b'{"image": "\\ud800"}', b"1e999999",
             b'{"image": "x"' + b", " * 10 + b"}", b"[" * 100_000 + b"]" * 100_000]))
    if kind == "random":
        return json.dumps(draw(json_values)).encode()
    body = dict(VALID_BODY)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(BODY_KEYS))
        if draw(st.booleans()) and key in body:
            body.pop(key)
        else:
            body[key] = draw(wild)
    if draw(st.booleans()):
        body["databases"] = draw(st.lists(st.sampled_from(TRAVERSAL) | st.text(max_size=70),
                                          max_size=3))
    return json.dumps(body, allow_nan=True).encode()


def test_task_bodies_never_give_a_5xx(server, session):
    counts = {"requests": 0, "created": 0, "refused": 0}

    @fuzz_settings(examples(300, 5000), 5000)
    @given(task_bodies(), st.sampled_from([ALICE, ALICE, "", "Bearer ", "Bearer x.y",
                                           f"Bearer {NODE_KEYS['node-a']}", "Basic abc"]))
    def post(body, auth):
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = auth
        resp = session.post(f"{server.url}/api/task", data=body, headers=headers, timeout=30)
        counts["requests"] += 1
        answer = assert_clean_answer(resp)
        if resp.status_code == 201:
            counts["created"] += 1
            assert auth == ALICE
            assert isinstance(answer["id"], int) and answer["runs"]
        else:
            counts["refused"] += 1
            assert resp.status_code in (400, 401, 403, 404, 413), resp.status_code

    post()
    # the server still works afterwards
    ok = session.post(f"{server.url}/api/task", json=VALID_BODY, headers={"Authorization": ALICE},
                      timeout=10)
    assert ok.status_code == 201
    assert session.get(f"{server.url}/api/task/{ok.json()['id']}", timeout=10,
                       headers={"Authorization": ALICE}).status_code == 200
    assert counts["created"] and counts["refused"] > counts["created"], counts
    record("fuzz_server_task_bodies", counts)


METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
PATH_PARTS = ["api", "task", "run", "node", "version", "health", "kill", "..", ".", "", "%2e%2e",
              "%2f", "1", "0", "-1", "99999999999999999999999", "1.5", "abc", "%00", "~", "%ff",
              "socket.io", "ü", "?x=1", "?node_id=node-a", "?node_id=%00", "#frag"]


@st.composite
def paths(draw):
    parts = draw(st.lists(st.sampled_from(PATH_PARTS) | st.text(
        "abc/%.?&=~-_0123456789", max_size=8), max_size=6))
    return "/" + "/".join(parts)


def test_random_paths_and_methods_never_give_a_5xx(server, session):
    n = {"requests": 0}
    token = tokens.sign(TOKEN_SECRET.encode(), tokens.Claims(1, 1, "node-a", int(time.time()) + 600))

    @fuzz_settings(examples(300, 5000), 5000)
    @given(st.sampled_from(METHODS), paths(),
           st.sampled_from([ALICE, "", f"Bearer {token}", "Bearer " + "A" * 5000, "Bearer a.b.c"]),
           st.none() | st.binary(max_size=50))
    def call(method, path, auth, body):
        if path.startswith("/socket.io"):
            return  # Socket.IO's own endpoint answers in its protocol, not the API's JSON
        headers = {"Authorization": auth} if auth else {}
        resp = session.request(method, server.url + path, headers=headers, data=body, timeout=30)
        n["requests"] += 1
        assert resp.status_code < 500, f"{method} {path}: {resp.status_code} {resp.text[:200]}"
        if method != "HEAD" and resp.status_code >= 400:
            assert_clean_answer(resp)

    call()
    assert session.get(f"{server.url}/api/version", headers={"Authorization": ALICE},
                       timeout=10).json() == {"version": "0.1.0"}
    record("fuzz_server_paths", n)


events = st.sampled_from(["run_result", "algorithm_status_change", "command_rejected",
                          "node_connection_request", "command_request", "no_such_event"])


def test_socket_events_from_a_node_never_break_the_server(server):
    """Whatever a (compromised) node sends, the server answers or ignores it and stays up."""
    sio = socketio.Client(reconnection=False)
    sio.connect(server.url, auth={"api_key": NODE_KEYS["node-b"]}, transports=["websocket"],
                wait_timeout=10)
    n = {"events": 0}
    try:
        @fuzz_settings(examples(150, 2000), 2000)
        @given(events, json_values | st.fixed_dictionaries(
            {"run_id": st.sampled_from(BAD_IDS) | st.integers(1, 10)},
            optional={"status": st.sampled_from(["completed", "failed", "nope", None, 3]),
                      "data": json_values, "logs": json_values | odd_text,
                      "detail": json_values, "task_id": json_values}))
        def send(event, data):
            n["events"] += 1
            ack = sio.call(event, data, timeout=10) if event in (
                "run_result", "algorithm_status_change", "command_request") else sio.emit(event, data)
            if event in ("run_result", "algorithm_status_change", "command_request"):
                assert isinstance(ack, dict) and "ok" in ack, ack
                if not ack["ok"]:
                    assert isinstance(ack["error"], str) and ack["error"]

        send()
        assert sio.connected, "the server hung up on the node"
    finally:
        sio.disconnect()
    assert requests.get(f"{server.url}/api/version", headers={"Authorization": ALICE},
                        timeout=10).status_code == 200
    record("fuzz_server_socket_events", n)


# deeper than the server's MAX_DEPTH (64), but within what the Python client itself can encode
deep_values = st.sampled_from([50, 65, 200]).map(_nest)
ANSWERED = ("run_result", "algorithm_status_change", "algorithm_progress", "node_heartbeat",
            "command_request", "no_such_event")


def test_binary_and_deep_socket_payloads_always_get_an_answer_and_store_nothing_half(server):
    """Binary attachments and deep nesting anywhere: every event that answers gives a dict ack
    (an error for what is not JSON), the server stays up, and a run's stored result is the one
    result it acknowledged."""
    from dummy_server.testing import FakeNode, wait_until

    node = FakeNode(server.url, "node-b").connect()
    researcher = socketio.Client(reconnection=False)
    researcher.connect(server.url, auth={"api_key": RESEARCHER_KEYS["alice"]},
                       transports=["websocket"], wait_timeout=10)
    accepted: list = []
    try:
        resp = requests.post(f"{server.url}/api/task", headers={"Authorization": ALICE},
                             json={"image": "v6-demo/avg", "nodes": ["node-b"]}, timeout=10)
        assert resp.status_code == 201, resp.text
        task_id = resp.json()["id"]

        def mine() -> list[dict]:  # earlier tests left pending runs for this node too
            return [c for c in node.commands if c.get("task_id") == task_id]

        wait_until(mine, what="the command")
        run_id = mine()[0]["run_id"]

        @fuzz_settings(examples(60, 1000), 1000)
        @given(st.sampled_from(ANSWERED), binary_json | deep_values | st.fixed_dictionaries(
            {"run_id": st.just(run_id) | st.sampled_from(BAD_IDS)},
            optional={"status": st.sampled_from(["completed", "failed", "nope"]),
                      "data": binary_json | deep_values, "logs": binary_json,
                      "image": st.just("v6-demo/avg"), "task_info": binary_json}))
        def send(event, data):
            sender = researcher if event == "command_request" else node.sio
            ack = sender.call(event, data, timeout=10)
            assert isinstance(ack, dict) and "ok" in ack, ack
            if not ack["ok"]:
                assert isinstance(ack["error"], str) and 0 < len(ack["error"]) < 2000
            elif event == "run_result" and not ack.get("duplicate"):
                accepted.append(data)

        send()
        assert node.sio.connected and researcher.connected, "the server hung up"
    finally:
        researcher.disconnect()
        node.close()
    run = requests.get(f"{server.url}/api/run/{run_id}", headers={"Authorization": ALICE},
                       timeout=10)
    assert run.status_code == 200
    stored = run.json()["result"]
    assert len(accepted) <= 1
    if accepted:
        assert stored is not None and stored["data"] == accepted[0].get("data")
    else:
        assert stored is None
