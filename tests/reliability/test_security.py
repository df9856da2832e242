"""Nothing let in: the proxy reaches the server's /api only, the server takes only valid keys and
only a task's own token, and no token or key ever shows up in any process's log."""
from __future__ import annotations

import secrets
import socket
import time
from pathlib import Path

import pytest
import requests
import socketio

from dummy_server import tokens
from localcluster.stack import wait_for
from tests.integration.support import make_stack, node_spec, pytestmark  # noqa: F401
from tests.reliability.test_fuzz_server import assert_clean_answer


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = make_stack(tmp_path_factory.mktemp("security"), [node_spec("node-a"), node_spec("node-b")])
    yield s
    s.close()


def proxy_url(stack) -> str:
    # the proxy listens on the cluster's gateway address when pods are network-isolated
    return f"http://{stack.proxy_host}:{stack.proxy_port}"


def raw(host: str, port: int, data: bytes) -> tuple[int, bytes]:
    """Bytes exactly as given (no client normalisation); (status, body)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def token_of_running(stack, node_id: str, seconds: float = 3.0) -> tuple[dict, str]:
    """Start a sleeper; return (task, the container token the node wrote for it)."""
    task = stack.create_task(image="test/sleeper", input={"seconds": seconds}, databases=[],
                             nodes=[node_id])
    path = (stack.workdir / "nodes" / node_id / "tasks" / "runs" / str(task["runs"][0]["id"])
            / "task" / "token")
    token = wait_for(lambda: path.exists() and path.read_text(), 30, "the token file")
    return task, token


def cluster_requests(stack, key: str) -> int:
    return stack.cluster.metrics()["requests"].get(key, 0)


@pytest.mark.parametrize("request_bytes, status", [
    (b"CONNECT 127.0.0.1:{kube} HTTP/1.1\r\nHost: 127.0.0.1:{kube}\r\n\r\n", 405),
    (b"GET http://127.0.0.1:{kube}/api/v1/namespaces HTTP/1.1\r\nHost: 127.0.0.1:{kube}\r\n\r\n", 400),
    (b"GET //127.0.0.1:{kube}/api/v1/namespaces HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /api/../api/v1/namespaces HTTP/1.1\r\nHost: 127.0.0.1:{kube}\r\n\r\n", 400),
    (b"GET /api/%2e%2e/localcluster/metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /api/..%5clocalcluster HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /api/%252e%252e/localcluster/metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /localcluster/metrics HTTP/1.1\r\nHost: 127.0.0.1:{kube}\r\n\r\n", 404),
    (b"GET /health/../api/version HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"TRACE /api/version HTTP/1.1\r\nHost: x\r\n\r\n", 405),
])
def test_the_proxy_reaches_nothing_but_the_server(stack, request_bytes, status):
    kube = stack.cluster.server.rsplit(":", 1)[1].encode()
    before = cluster_requests(stack, "list namespaces")
    data = request_bytes.replace(b"{kube}", kube).replace(
        b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    got, body = raw(stack.proxy_host, stack.proxy_port, data)
    assert got == status, body
    assert b"namespaces" not in body and b"requests" not in body
    assert cluster_requests(stack, "list namespaces") == before  # nothing reached the cluster


def test_host_tricks_still_land_on_the_server(stack):
    """A Host or X-Forwarded-Host naming the Kubernetes API changes nothing: /api/v1/... goes
    to the server, which does not know the path."""
    kube = stack.cluster.server.split("://", 1)[1]  # host:port of the API server
    before = cluster_requests(stack, "list namespaces")
    for headers in ({"Host": kube}, {"X-Forwarded-Host": kube}, {"Host": "kubernetes.default.svc"}):
        resp = requests.get(f"{proxy_url(stack)}/api/v1/namespaces",
                            headers=headers, timeout=10)
        assert resp.status_code in (401, 404)
        assert_clean_answer(resp)
    assert cluster_requests(stack, "list namespaces") == before


def test_requests_without_a_valid_token_are_refused_through_the_proxy(stack):
    proxy = proxy_url(stack)
    other_secret = tokens.sign(b"not-the-server-secret-0123456789",
                               tokens.Claims(1, 1, "node-a", int(time.time()) + 600))
    for auth in (None, "Bearer ", "Bearer nonsense", f"Bearer {other_secret}", "Basic eDp5"):
        resp = requests.get(f"{proxy}/api/version", timeout=10,
                            headers={"Authorization": auth} if auth else {})
        assert resp.status_code == 401, (auth, resp.text)


def test_wrong_keys_and_other_tasks_tokens_are_refused(stack):
    task_a, token_a = token_of_running(stack, "node-a")
    task_b, token_b = token_of_running(stack, "node-b")
    proxy = proxy_url(stack)

    def get(token, path):
        return requests.get(f"{proxy}{path}", headers={"Authorization": f"Bearer {token}"},
                            timeout=10)

    assert get(token_a, f"/api/task/{task_a['id']}").status_code == 200
    assert get(token_a, f"/api/task/{task_b['id']}").status_code == 403
    assert get(token_b, f"/api/run/{task_a['runs'][0]['id']}").status_code == 403
    assert get(token_a, "/api/node").status_code == 403
    # a token of node-a's run, re-signed as if node-b had it: the signature no longer matches
    body, mac = token_a.split(".")
    assert get(body[:-1] + ("A" if body[-1] != "A" else "B") + "." + mac, "/api/version").status_code == 401
    # claims for a run the node does not have: refused even with the right secret
    forged = tokens.sign(stack.token_secret.encode(), tokens.Claims(
        task_a["id"], task_a["runs"][0]["id"], "node-b", int(time.time()) + 600))
    assert get(forged, "/api/version").status_code == 401
    # a node key is not an HTTP credential; a wrong key does not open a socket
    node_key = stack.nodes["node-a"].api_key
    assert requests.get(f"{stack.server_url}/api/version", timeout=10,
                        headers={"Authorization": f"Bearer {node_key}"}).status_code == 403
    sio = socketio.Client(reconnection=False)
    refusals = []
    sio.on("connect_error", refusals.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        sio.connect(stack.server_url, auth={"api_key": node_key + "x"}, transports=["websocket"],
                    wait_timeout=10)
    assert not sio.connected and "invalid api key" in str(refusals)
    stack.wait_task(task_a["id"])
    stack.wait_task(task_b["id"])


def test_no_token_or_key_in_any_log(stack):
    """Run tasks of both shapes, then grep every log the stack wrote for their tokens and for
    the nodes' and researcher's keys."""
    task, container_token = token_of_running(stack, "node-a", seconds=0.5)
    legacy_token = "legacy-" + secrets.token_hex(12)
    run_id = 880000 + secrets.randbelow(10000)
    client = socketio.SimpleClient()
    client.connect(stack.server_url, auth={"api_key": stack.researcher_key},
                   transports=["websocket"])
    try:
        ack = client.call("command_request", {
            "run_id": run_id, "task_info": {"arg1": "/app/input/csv/default", "arg2": "Age",
                                            "arg3": "/app/output/avg.txt"},
            "image": "v6-demo/avg", "docker_input": "x", "tmp_vol_name": "tmp",
            "token": legacy_token, "databases_to_use": ["default"], "target_nodes": ["node-a"]},
            timeout=10)
        assert ack.get("ok"), ack
        bad = client.call("command_request", {
            "run_id": run_id + 1, "image": "evil/miner", "task_info": {}, "docker_input": "",
            "tmp_vol_name": "tmp", "token": legacy_token, "databases_to_use": ["../etc"],
            "target_nodes": ["node-a"]}, timeout=10)
        assert bad.get("ok"), bad
    finally:
        client.disconnect()
    assert stack.wait_task(task["id"])["runs"][0]["status"] == "completed"
    for rid, status in ((run_id, "completed"), (run_id + 1, "failed")):
        run = wait_for(lambda: (r := stack.api("GET", f"/api/run/{rid}").json()).get("result")
                       and r, 60, f"legacy run {rid}")
        assert run["status"] == status, run
    secrets_to_find = {"container token": container_token, "legacy token": legacy_token,
                       "researcher key": stack.researcher_key,
                       **{f"{n} api key": spec.api_key for n, spec in stack.nodes.items()}}
    files = [p for p in Path(stack.workdir).rglob("*")
             if p.is_file() and (p.suffix in (".log", ".stderr") or "logs" in p.parts)]
    names = {p.name for p in files}
    assert {"node-node-a.log", "server.log", "proxy.log"} <= names, names
    found = [(what, str(p)) for p in files for what, value in secrets_to_find.items()
             if value in p.read_text(errors="replace")]
    assert not found, f"secrets in logs: {found}"


def test_a_storm_of_bad_payloads_through_the_server_then_a_valid_task(stack):
    """Generated bad payloads relayed by the server's legacy `command_request` (which passes
    them on unchanged) reach the real node: each one with a run id gets a refusal as its
    result, the node stays up, and a valid task afterwards completes."""
    import json

    from hypothesis import given

    from node.config import parse_config
    from node.errors import PayloadError
    from node.models import parse_command
    from tests.reliability.payloads import payloads
    from tests.reliability.settings import examples, fuzz_settings, record

    node_config = parse_config(stack.node_config(stack.nodes["node-a"]), {"NODE_API_KEY": "k"})
    client = socketio.SimpleClient()
    client.connect(stack.server_url, auth={"api_key": stack.researcher_key},
                   transports=["websocket"])
    relayed: dict[int, str] = {}
    n = {"sent": 0, "refused_by_server": 0}
    try:
        @fuzz_settings(examples(80, 2000), 2000)
        @given(payloads())
        def storm(raw):
            try:
                parse_command(raw, node_config)
                return  # valid ones would run algorithms: the in-process fuzz covers them
            except PayloadError as e:
                expected = e.status
            if not isinstance(raw, dict):
                return  # not a command_request at all
            try:
                if len(json.dumps(raw, default=str)) > 500_000:
                    return  # over the socket's message limit
            except RecursionError:
                return  # nested too deep for any Python Socket.IO client to send
            payload = {**raw, "target_nodes": ["node-a"]}
            n["sent"] += 1
            ack = client.call("command_request", payload, timeout=30)
            if ack.get("ok"):
                relayed[raw["run_id"]] = expected
            else:
                n["refused_by_server"] += 1
                assert ack.get("error")

        storm()
    finally:
        client.disconnect()
    task = stack.create_task(image="v6-demo/avg", input={"method": "avg", "column": "Age"},
                             databases=["default"], nodes=["node-a"])
    assert stack.wait_task(task["id"], timeout=120)["runs"][0]["status"] == "completed"
    for run_id, status in relayed.items():
        run = wait_for(lambda: (r := stack.api("GET", f"/api/run/{run_id}").json()).get("result")
                       and r, 60, f"the refusal of run {run_id}")
        assert run["status"] == status and "command refused" in run["result"]["logs"], run
    log = stack.procs["node-node-a"].log_text()
    assert stack.procs["node-node-a"].alive() and "error while handling" not in log
    assert relayed, n
    record("storm_through_server", {**n, "relayed_to_node": len(relayed)})
