"""Server edges (issue 13 item 7): binary values in tasks and results get a clear error answer,
never an exception, and nothing is stored half."""
from __future__ import annotations

import json

import pytest
import socketio

from dummy_server.testing import RESEARCHER_KEYS, wait_until

pytestmark = pytest.mark.integration


def test_a_result_with_bytes_is_refused_with_an_error_and_a_good_one_still_lands(server, alice,
                                                                                  nodes):
    a = nodes(server.url, "node-a")
    alice.post(f"{server.url}/api/task", json={"image": "v6-demo/avg", "nodes": ["node-a"]},
               timeout=10).raise_for_status()
    wait_until(lambda: a.commands, what="the command")
    cmd = a.commands[0]
    for data in (b"\x00\xff", {"nested": [1, b"raw"]}):
        ack = a.result(cmd, "completed", data)
        assert ack["ok"] is False and "not JSON" in ack["error"]
    run = alice.get(f"{server.url}/api/run/{cmd['run_id']}", timeout=10).json()
    assert run["result"] is None  # nothing stored half
    assert a.result(cmd, "completed", {"mean": 1.5}) == {"ok": True, "duplicate": False}


def test_a_command_request_with_a_binary_attachment_gets_command_error(server, nodes):
    nodes(server.url, "node-a")
    errors = []
    sio = socketio.Client(reconnection=False)
    sio.on("command_error", errors.append)
    sio.connect(server.url, auth={"api_key": RESEARCHER_KEYS["alice"]}, transports=["websocket"],
                wait_timeout=10)
    try:
        ack = sio.call("command_request", {"run_id": 7, "image": "v6-demo/avg",
                                           "task_info": {"blob": [b"\x01\x02"]}}, timeout=10)
        assert ack["ok"] is False and "not JSON" in ack["error"]
        wait_until(lambda: errors, what="command_error")
        assert errors[0]["run_id"] == 7
        ok = sio.call("command_request", {"run_id": 8, "image": "v6-demo/avg",
                                          "task_info": {}}, timeout=10)
        assert ok["ok"] is True  # the server stays up and consistent
    finally:
        sio.disconnect()


def _body(input_len: int) -> dict:
    return {"image": "v6-demo/avg", "input": "x" * input_len, "databases": ["default"],
            "nodes": ["node-a"]}


def test_the_largest_task_the_server_accepts_is_accepted_by_a_node(server, alice, nodes):
    from dummy_server.config import MAX_TASK_SPEC_BYTES
    from dummy_server.validation import spec_size
    from node.config import parse_config
    from node.models import parse_command

    a = nodes(server.url, "node-a")
    base = {k: v for k, v in _body(0).items() if k != "nodes"}
    largest = MAX_TASK_SPEC_BYTES - spec_size(base)

    def post(body: dict):  # compact, as the node counts
        return alice.post(f"{server.url}/api/task", data=json.dumps(body, separators=(",", ":")),
                          headers={"Content-Type": "application/json"}, timeout=30)

    too_big = post(_body(largest + 1))
    assert too_big.status_code == 413 and "task too large" in too_big.json()["error"]
    assert post(_body(largest)).status_code == 201
    wait_until(lambda: a.commands, what="the command")
    config = parse_config({"node_id": "node-a", "api_key": "k", "server_url": server.url,
                           "task_dir": "/var/lib/v6-node/tasks",
                           "databases": [{"label": "default", "uri": "/data/a.csv"}],
                           "images": {"allowed": ["v6-demo/*"]}}, {})
    command = parse_command(a.commands[0], config)  # raises PayloadError if too large
    assert command.run_id == a.commands[0]["run_id"]
    assert len(a.commands) == 1  # the refused one made no run


@pytest.fixture
def researcher(server):
    errors: list = []
    sio = socketio.Client(reconnection=False)
    sio.on("protocol_error", errors.append)
    sio.connect(server.url, auth={"api_key": RESEARCHER_KEYS["alice"]}, transports=["websocket"],
                wait_timeout=10)
    yield sio, errors
    sio.disconnect()


def test_an_unknown_event_gets_an_error_ack_and_a_protocol_error(researcher):
    sio, errors = researcher
    ack = sio.call("no_such_event", {"blob": b"\x00"}, timeout=10)
    assert ack == {"ok": False, "error": "unknown event 'no_such_event'"}
    sio.emit("another_unknown")  # no ack asked for: the protocol_error event still comes
    wait_until(lambda: len(errors) == 2, what="two protocol_error events")
    assert [e["event"] for e in errors] == ["no_such_event", "another_unknown"]


@pytest.mark.parametrize("packet", ['2["command_request",', "2" + "[" * 5000 + "]" * 5000])
def test_an_undecodable_packet_gets_a_protocol_error_and_the_server_stays_up(server, researcher,
                                                                            packet):
    sio, errors = researcher
    sio.eio.send(packet)  # a raw Socket.IO EVENT packet that does not decode
    wait_until(lambda: errors, what="protocol_error")
    assert errors[0] == {"event": None, "error": "packet could not be decoded"}
    wait_until(lambda: "undecodable packet from" in server.log(), what="the log line")
    assert packet[:30] not in server.log()  # the size is logged, not the payload
    ack = sio.call("no_such_event", timeout=10)  # the connection still works
    assert ack["ok"] is False


def test_the_server_size_limit_is_tied_to_the_node_default():
    from dummy_server.config import (COMMAND_ENVELOPE_BYTES, MAX_TASK_SPEC_BYTES,
                                     NODE_MAX_PAYLOAD_BYTES)
    from node.config import LimitsConfig

    # a change to the node's default must move the server's limit with it
    assert NODE_MAX_PAYLOAD_BYTES == LimitsConfig.max_payload_bytes
    assert MAX_TASK_SPEC_BYTES == NODE_MAX_PAYLOAD_BYTES - COMMAND_ENVELOPE_BYTES
