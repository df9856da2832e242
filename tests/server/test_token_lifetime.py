"""Container tokens die with their run and work only through their node's proxy: the real proxy
processes (one per node, each with its node's identity) in front of the real server process,
fake nodes over Socket.IO. Loopback only."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from dummy_proxy.testing import ProxyProcess
from dummy_server.testing import NODE_KEYS, RESEARCHER_KEYS, FakeNode, ServerProcess, wait_until

pytestmark = pytest.mark.integration
ALICE = {"Authorization": f"Bearer {RESEARCHER_KEYS['alice']}"}
PARENT_WAIT = 1.0  # the server's subtask_parent_wait_seconds here: short, the tests wait it out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("server"),
                         subtask_parent_wait_seconds=PARENT_WAIT).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def proxies(server, tmp_path_factory):
    """node id -> that node's proxy; "none": a proxy started without a node identity."""
    made = {n: ProxyProcess(tmp_path_factory.mktemp(f"proxy-{n}"), server.url, name=f"proxy-{n}",
                            node_key=NODE_KEYS[n]).start() for n in NODE_KEYS}
    made["none"] = ProxyProcess(tmp_path_factory.mktemp("proxy-none"), server.url,
                                name="proxy-none").start()
    yield made
    for proc in made.values():
        proc.stop()


@pytest.fixture(scope="module")
def fake_nodes(server):
    made = [FakeNode(server.url, n).connect() for n in NODE_KEYS]
    yield {n.node_id: n for n in made}
    for node in made:
        node.close()


def start_run(server, fake_nodes, node_id="node-a", status="active") -> tuple[dict, dict]:
    """A task on one node as alice; returns (the task, the command the node got, with its token),
    the run reported as ``status`` (None: left pending)."""
    node = fake_nodes[node_id]
    before = len(node.commands)
    resp = requests.post(f"{server.url}/api/task", json={"image": "v6-demo/central",
                                                         "nodes": [node_id]},
                         headers=ALICE, timeout=10)
    assert resp.status_code == 201, resp.text
    wait_until(lambda: len(node.commands) > before, what=f"{node_id}'s command")
    command = node.commands[-1]
    assert command["task_id"] == resp.json()["id"]
    if status is not None:
        assert node.status(command, status) == {"ok": True}
    return resp.json(), command


def call(proxy, command, method="GET", path="/api/version", **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {command['token']}", **kwargs.pop("headers", {})}
    return requests.request(method, f"{proxy.url}{path}", headers=headers, timeout=15, **kwargs)


def next_task_id(server) -> int:
    """Creates a task as alice: its id shows how many tasks were made before it."""
    resp = requests.post(f"{server.url}/api/task", json={"image": "x", "nodes": ["node-b"]},
                         headers=ALICE, timeout=10)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def test_a_finished_runs_token_is_refused_and_makes_no_subtask(server, proxies, fake_nodes):
    task, command = start_run(server, fake_nodes)
    proxy = proxies["node-a"]
    assert call(proxy, command).status_code == 200
    assert fake_nodes["node-a"].result(command, "completed", "42") == {"ok": True,
                                                                        "duplicate": False}
    expected = (f"container token of run {command['run_id']} is no longer valid: "
                f"the run is completed")
    for method, path, body in (("GET", "/api/version", None),
                               ("GET", f"/api/task/{task['id']}", None),
                               ("POST", "/api/task", {"image": "v6-demo/partial"})):
        refused = call(proxy, command, method, path, json=body)
        assert refused.status_code == 401 and refused.json() == {"error": expected}, refused.text
    # the refused POST made no task: the next one alice makes takes the very next id
    assert next_task_id(server) == task["id"] + 1


def test_a_failed_runs_token_is_refused(server, proxies, fake_nodes):
    _, command = start_run(server, fake_nodes)
    assert fake_nodes["node-a"].status(command, "failed", "exit code 1") == {"ok": True}
    refused = call(proxies["node-a"], command)
    assert refused.status_code == 401
    assert refused.json()["error"].endswith("no longer valid: the run ended as 'failed'")


def test_a_killed_runs_token_is_refused(server, proxies, fake_nodes):
    task, command = start_run(server, fake_nodes)
    assert call(proxies["node-a"], command).status_code == 200
    kill = requests.post(f"{server.url}/api/task/{task['id']}/kill", headers=ALICE, timeout=15)
    assert kill.status_code == 200
    assert kill.json()["nodes"]["node-a"]["killed"] == [command["run_id"]]
    refused = call(proxies["node-a"], command)
    assert refused.status_code == 401
    assert refused.json()["error"] == (f"container token of run {command['run_id']} is no longer "
                                       f"valid: the run was killed")
    run = requests.get(f"{server.url}/api/run/{command['run_id']}", headers=ALICE, timeout=10)
    assert run.json()["status"] == "killed by user"


def test_a_token_works_only_through_its_own_nodes_proxy(server, proxies, fake_nodes):
    _, command = start_run(server, fake_nodes, node_id="node-b")
    assert call(proxies["node-b"], command).status_code == 200
    foreign = call(proxies["node-a"], command)
    assert foreign.status_code == 403
    assert foreign.json()["error"] == ("container token of a run of node 'node-b' was presented "
                                       "through the proxy of node 'node-a'")
    assert NODE_KEYS["node-a"] not in foreign.text and NODE_KEYS["node-b"] not in foreign.text


def test_a_token_straight_to_the_server_is_refused(server, fake_nodes):
    _, command = start_run(server, fake_nodes)
    direct = call(server, command)
    assert direct.status_code == 401
    assert direct.json()["error"] == ("container tokens are accepted only through a node's proxy "
                                      "(no node identity)")
    guessed = call(server, command, headers={"X-V6-Node-Key": "not-a-node-key"})
    assert guessed.status_code == 401 and "unknown node identity" in guessed.json()["error"]


def test_a_client_sent_node_key_never_passes_the_proxy(server, proxies, fake_nodes):
    _, command = start_run(server, fake_nodes)
    own_key = {"X-V6-Node-Key": NODE_KEYS["node-a"]}
    # without an identity of its own the proxy sends none: the client's is dropped
    dropped = call(proxies["none"], command, headers=own_key)
    assert dropped.status_code == 401 and "(no node identity)" in dropped.json()["error"]
    # node-b's proxy sends node-b's identity, whatever the client claims
    replaced = call(proxies["node-b"], command, headers=own_key)
    assert replaced.status_code == 403
    assert "through the proxy of node 'node-b'" in replaced.json()["error"]


def test_subtasks_from_a_running_parent_which_reads_them_after_they_finished(server, proxies,
                                                                              fake_nodes):
    task, parent = start_run(server, fake_nodes)
    proxy = proxies["node-a"]
    node = fake_nodes["node-a"]
    before = len(node.commands)
    sub = call(proxy, parent, "POST", "/api/task", json={"image": "v6-demo/partial"})
    assert sub.status_code == 201, sub.text
    wait_until(lambda: len(node.commands) > before, what="the subtask's command")
    child = node.commands[-1]
    assert child["parent_id"] == task["id"] and child["task_id"] == sub.json()["id"]
    # the subtask finishes: its token dies, the still running parent reads its result
    assert node.status(child, "active") == {"ok": True}
    assert node.result(child, "completed", "partial-7")["ok"]
    assert call(proxy, child).status_code == 401
    view = call(proxy, parent, path=f"/api/run/{child['run_id']}")
    assert view.status_code == 200 and view.json()["result"]["data"] == "partial-7"
    assert call(proxy, parent, path=f"/api/task/{sub.json()['id']}").status_code == 200
    # once the parent is finished too, it can neither read nor make subtasks
    assert node.result(parent, "completed", "7")["ok"]
    again = call(proxy, parent, "POST", "/api/task", json={"image": "v6-demo/partial"})
    assert again.status_code == 401 and "the run is completed" in again.json()["error"]
    assert call(proxy, parent, path=f"/api/run/{child['run_id']}").status_code == 401


def test_a_subtask_waits_for_its_parent_to_become_active(server, proxies, fake_nodes):
    """The algorithm may ask before the node's "active" reaches the server: the request is held
    until it does (bounded by subtask_parent_wait_seconds), then answered."""
    _, parent = start_run(server, fake_nodes, status=None)
    node = fake_nodes["node-a"]
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(call, proxies["node-a"], parent, "POST", "/api/task",
                              json={"image": "v6-demo/partial"})
        assert node.status(parent, "initializing") == {"ok": True}
        assert node.status(parent, "active") == {"ok": True}
        created = pending.result(timeout=15)
    assert created.status_code == 201, created.text


def test_a_parent_that_never_becomes_active_is_refused_a_subtask(server, proxies, fake_nodes):
    task, parent = start_run(server, fake_nodes, status="initializing")
    refused = call(proxies["node-a"], parent, "POST", "/api/task",
                   json={"image": "v6-demo/partial"})
    assert refused.status_code == 403
    assert refused.json()["error"] == (f"run {parent['run_id']} is initializing: a subtask can be "
                                       f"created only while its parent run is active")
    # reading its own task is fine meanwhile: the run is not finished
    assert call(proxies["node-a"], parent, path=f"/api/task/{task['id']}").status_code == 200
    assert next_task_id(server) == task["id"] + 1


def test_no_proxy_or_server_log_shows_a_node_key(server, proxies):
    for proc in [server, *proxies.values()]:
        text = proc.log()
        assert text and not any(key in text for key in NODE_KEYS.values()), proc.name


# --- the proxy's identity settings (dummy_proxy.config) ---------------------------------------

def test_the_proxy_reads_its_node_key_from_the_file_before_the_environment(tmp_path):
    from dummy_proxy.config import NODE_KEY_ENV, load_config
    from dummy_proxy.errors import ConfigError

    key_file = tmp_path / "api-key"
    key_file.write_text("key-from-the-file\n")
    config = tmp_path / "proxy.yaml"
    config.write_text(f"node_api_key_file: {key_file}\n")
    loaded = load_config(config, env={NODE_KEY_ENV: "key-from-env"})
    assert loaded.node_api_key == "key-from-the-file"
    assert "key-from" not in repr(loaded)
    assert load_config(None, env={NODE_KEY_ENV: "key-from-env"}).node_api_key == "key-from-env"
    assert load_config(None, env={}).node_api_key is None
    key_file.write_text("  \n")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(config, env={})
    config.write_text(f"node_api_key_file: {tmp_path / 'missing'}\n")
    with pytest.raises(ConfigError, match="node_api_key_file: cannot read"):
        load_config(config, env={})
