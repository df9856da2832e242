"""Node liveness on a real server process (CONTRACTS §2): heartbeats keep a node alive, silence
makes it suspected then offline, researchers are told, and nothing sent to an offline node is
lost."""
from __future__ import annotations

import subprocess
import threading

import pytest
import socketio

from dummy_server.testing import (REPO, RESEARCHER_KEYS, ServerProcess, answer, emitter_command,
                                  wait_until)

pytestmark = pytest.mark.integration

# Small intervals keep the test short; the beaters below beat four times as often as expected.
HEARTBEAT = {"interval_seconds": 0.2, "suspect_after": 4, "offline_after": 8}
BEAT_EVERY = 0.05


@pytest.fixture
def server(tmp_path):
    proc = ServerProcess(tmp_path / "server", heartbeat=HEARTBEAT).start()
    yield proc
    proc.stop()


@pytest.fixture
def watcher(server):
    """A researcher socket recording ``node_state`` events as (node, previous, state)."""
    sio = socketio.Client(reconnection=False)
    events: list[dict] = []
    sio.on("node_state", events.append)
    sio.connect(server.url, auth={"api_key": RESEARCHER_KEYS["bob"]}, transports=["websocket"],
                wait_timeout=10)
    sio.events = events
    yield sio
    sio.disconnect()


def changes(watcher, node_id):
    return [(e["previous"], e["state"]) for e in list(watcher.events) if e["node_id"] == node_id]


class Beater(threading.Thread):
    """Sends a fake node's heartbeats until stopped; ``paused`` holds them (the session stays)."""

    def __init__(self, node):
        super().__init__(name=f"beater-{node.node_id}")
        self.node = node
        self.acks: list[dict] = []
        self.paused = threading.Event()
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            if not self.paused.is_set():
                self.acks.append(self.node.heartbeat(runs_active=1))
            self.stopped.wait(BEAT_EVERY)  # the beat's own pace, not a synchronisation


@pytest.fixture
def beaters():
    made: list[Beater] = []

    def make(node):
        beater = Beater(node)
        beater.start()
        made.append(beater)
        return beater

    yield make
    for beater in made:
        beater.stopped.set()
        beater.join(15)


def listing(session, server) -> dict:
    nodes = session.get(f"{server.url}/api/node", timeout=10).json()["nodes"]
    return {n["id"]: n for n in nodes}


def create(session, server, **body) -> dict:
    resp = session.post(f"{server.url}/api/task", json={"image": "v6-demo/avg", **body}, timeout=10)
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_beats_keep_a_node_alive_and_silence_makes_it_suspected_then_offline(
        server, alice, nodes, watcher, beaters):
    a = nodes(server.url, "node-a")
    beater = beaters(a)
    wait_until(lambda: changes(watcher, "node-a") == [("offline", "alive")], what="node-a alive")
    # beats over longer than the offline threshold (8 x 0.2 s): nothing changes
    wait_until(lambda: len(beater.acks) >= 50, what="50 acknowledged beats")
    assert all(ack == {"ok": True, "state": "alive", "interval_seconds": 0.2}
               for ack in beater.acks[:50])
    view = listing(alice, server)["node-a"]
    assert (view["online"], view["state"]) == (True, "alive") and view["last_seen"] > 0
    assert changes(watcher, "node-a") == [("offline", "alive")]

    beater.paused.set()  # silence, but the Socket.IO session stays open
    wait_until(lambda: len(changes(watcher, "node-a")) >= 3, what="node-a suspected then offline")
    assert changes(watcher, "node-a") == [("offline", "alive"), ("alive", "suspected"),
                                          ("suspected", "offline")]
    offline = watcher.events[-1]
    view = listing(alice, server)["node-a"]
    assert (view["online"], view["state"]) == (False, "offline")
    assert view["since"] == offline["since"] and view["last_seen"] == offline["last_seen"]
    assert offline["since"] - offline["last_seen"] >= 8 * 0.2

    task = create(alice, server, nodes=["node-a"])
    assert len(task["warnings"]) == 1
    assert task["warnings"][0].startswith("node node-a is offline since 20")
    assert task["warnings"][0].endswith("; its runs wait until it reconnects")

    beater.paused.clear()
    wait_until(lambda: changes(watcher, "node-a")[-1] == ("offline", "alive"), what="node-a back")
    assert listing(alice, server)["node-a"]["state"] == "alive"
    # the run created while it was offline reaches it: sent at once and again on its return
    wait_until(lambda: a.received >= 2, what="the pending run resent on recovery")
    assert [c["task_id"] for c in a.commands] == [task["id"]]
    assert "warnings" not in create(alice, server, nodes=["node-a"])


def test_a_task_for_an_offline_node_is_accepted_with_a_warning_and_delivered_when_it_connects(
        server, alice, nodes, watcher):
    task = create(alice, server, nodes=["node-b"])
    assert task["warnings"] == ["node node-b is offline and has not connected since the server "
                                "started; its runs wait until it reconnects"]
    b = nodes(server.url, "node-b")
    wait_until(lambda: b.commands, what="node-b's run")
    assert b.commands[0]["task_id"] == task["id"]
    # a suspected node (it connected but sends no beats) is named too
    wait_until(lambda: listing(alice, server)["node-b"]["state"] == "suspected", what="suspected")
    warned = create(alice, server, nodes=["node-b"])["warnings"]
    assert len(warned) == 1 and warned[0].startswith("node node-b is suspected offline")
    b.close()
    wait_until(lambda: changes(watcher, "node-b")[-1][1] == "offline", what="offline on disconnect")
    assert listing(alice, server)["node-b"]["online"] is False

    # the prototype's command_request answers with the same warnings
    sio = socketio.Client(reconnection=False)
    sio.connect(server.url, auth={"api_key": RESEARCHER_KEYS["alice"]}, transports=["websocket"],
                wait_timeout=10)
    try:
        ack = sio.call("command_request", {
            "run_id": 777, "task_info": {}, "image": "v6-demo/avg", "docker_input": "i",
            "tmp_vol_name": "t", "token": "x", "databases_to_use": ["default"],
            "target_nodes": ["node-b"]}, timeout=10)
    finally:
        sio.disconnect()
    assert ack["ok"] is True and ack["warnings"][0].startswith("node node-b is offline since 20")


def test_heartbeats_from_others_are_refused(server):
    sio = socketio.Client(reconnection=False)
    sio.connect(server.url, auth={"api_key": RESEARCHER_KEYS["alice"]}, transports=["websocket"],
                wait_timeout=10)
    try:
        assert sio.call("node_heartbeat", {}, timeout=10) == \
            {"ok": False, "error": "only nodes send heartbeats"}
    finally:
        sio.disconnect()


def test_the_emitter_warns_about_an_offline_node_and_shows_its_return(server, alice, nodes):
    key = RESEARCHER_KEYS["alice"]
    argv, env = emitter_command(server.url, key, "task", "--image", "v6-demo/avg", "--node", "node-b")
    sent = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert "warning: node node-b is offline and has not connected since the server started" \
        in sent.stderr

    argv, env = emitter_command(server.url, key, "task", "--image", "v6-demo/avg", "--node",
                                "node-b", "--wait", "--timeout", "30")
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        # the emitter subscribes before it submits: once its task exists, it hears node-b
        wait_until(lambda: alice.get(f"{server.url}/api/task/2", timeout=10).status_code == 200,
                   what="the emitter's task")
        nodes(server.url, "node-b", answer("completed", "42.0"))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "warning: node node-b is offline" in err
    assert "node node-b is alive (was offline" in err
