"""The proxy as a real process, in front of the real server and of a stand-in upstream."""
from __future__ import annotations

import hashlib
import socket
import time

import pytest
import requests

from dummy_proxy.testing import ProxyProcess
from dummy_server import tokens
from dummy_server.testing import RESEARCHER_KEYS, TOKEN_SECRET, wait_until

pytestmark = pytest.mark.integration
ALICE = {"Authorization": f"Bearer {RESEARCHER_KEYS['alice']}"}


def raw_request(port: int, data: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (no client normalisation); return (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while True:
            chunk = sock.recv(65536)
            received += chunk
            head, sep, body = received.partition(b"\r\n\r\n")
            if sep:
                length = [int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
            if not chunk:
                break
    return int(head.split(b" ", 2)[1]), body


def _container_token(server, fake_nodes, nodes=("node-a", "node-b")):
    """Create a task as alice; return (task, the token node-a got for its run)."""
    node = fake_nodes["node-a"]
    before = len(node.commands)
    resp = requests.post(f"{server.url}/api/task", json={"image": "v6-demo/central", "nodes": list(nodes)},
                         headers=ALICE, timeout=10)
    assert resp.status_code == 201, resp.text
    wait_until(lambda: len(node.commands) > before, what="node-a's command")
    # running: subtasks come only from an active parent run (CONTRACTS §3)
    assert node.status(node.commands[-1], "active") == {"ok": True}
    return resp.json(), node.commands[-1]["token"]


def test_boot_line_and_health(server, proxy):
    assert f"outbound access to server {server.url}: OK" in proxy.log()
    health = requests.get(f"{proxy.url}/health", timeout=10)
    assert health.status_code == 200 and health.json() == {"upstream": "ok"}


def test_algorithm_reaches_version_and_creates_a_subtask_with_its_token(server, proxy, fake_nodes):
    task, token = _container_token(server, fake_nodes)
    auth = {"Authorization": f"Bearer {token}"}
    version = requests.get(f"{proxy.url}/api/version", headers=auth, timeout=10)
    assert version.status_code == 200 and version.json() == {"version": "0.1.0"}
    counts = {n: len(node.commands) for n, node in fake_nodes.items()}
    sub = requests.post(f"{proxy.url}/api/task", headers=auth, timeout=10,
                        json={"image": "v6-demo/partial", "input": {"method": "partial"}})
    assert sub.status_code == 201, sub.text
    sub = sub.json()
    assert sorted(r["node_id"] for r in sub["runs"]) == ["node-a", "node-b"]  # the parent's nodes
    for name, node in fake_nodes.items():
        wait_until(lambda: len(node.commands) > counts[name], what=f"{name}'s subtask command")
        assert node.commands[-1]["parent_id"] == task["id"]
        assert node.commands[-1]["task_id"] == sub["id"]
    view = requests.get(f"{proxy.url}/api/task/{sub['id']}", headers=auth, timeout=10)
    assert view.status_code == 200 and view.json()["parent_id"] == task["id"]
    own = requests.get(f"{proxy.url}/api/task/{task['id']}", headers=auth, timeout=10)
    assert own.status_code == 200
    run = requests.get(f"{proxy.url}/api/run/{sub['runs'][0]['id']}", headers=auth, timeout=10)
    assert run.status_code == 200 and run.json()["task_id"] == sub["id"]
    # the researcher who made the parent task owns the subtask too
    mine = requests.get(f"{server.url}/api/task/{sub['id']}", headers=ALICE, timeout=10)
    assert mine.status_code == 200


def test_forged_expired_and_foreign_tokens(server, proxy, fake_nodes):
    task, token = _container_token(server, fake_nodes, nodes=["node-a"])
    body, mac = token.split(".")

    def get(tok, path="/api/version"):
        return requests.get(f"{proxy.url}{path}", headers={"Authorization": f"Bearer {tok}"},
                            timeout=10)

    forged = tokens.sign(b"someone-elses-secret-012345", tokens.Claims(task["id"], 1, "node-a",
                                                                       int(time.time()) + 600))
    assert get(forged).status_code == 401
    assert get(body[:-2] + "AA." + mac).status_code == 401
    run_id = task["runs"][0]["id"]
    expired = tokens.sign(TOKEN_SECRET.encode(), tokens.Claims(task["id"], run_id, "node-a",
                                                               int(time.time()) - 1))
    refused = get(expired)
    assert refused.status_code == 401 and "expired" in refused.json()["error"]
    no_run = tokens.sign(TOKEN_SECRET.encode(), tokens.Claims(task["id"], run_id, "node-b",
                                                              int(time.time()) + 600))
    assert get(no_run).status_code == 401
    # a valid token is still a container's: researcher-only and other tasks are refused
    assert get(token, "/api/node").status_code == 403
    other, _ = _container_token(server, fake_nodes, nodes=["node-a"])
    assert get(token, f"/api/task/{other['id']}").status_code == 403
    outside = requests.post(f"{proxy.url}/api/task", timeout=10,
                            headers={"Authorization": f"Bearer {token}"},
                            json={"image": "x", "nodes": ["node-b"]})
    assert outside.status_code == 403 and "parent task's nodes" in outside.json()["error"]


@pytest.mark.parametrize("request_bytes, status", [
    (b"CONNECT 127.0.0.1:{sink} HTTP/1.1\r\nHost: 127.0.0.1:{sink}\r\n\r\n", 405),
    (b"GET http://127.0.0.1:{sink}/api/headers HTTP/1.1\r\nHost: 127.0.0.1:{sink}\r\n\r\n", 400),
    (b"GET 127.0.0.1:{sink} HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /api/../sink-stats HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /api/%2e%2e/sink-stats HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /api%2f..%2fsink-stats HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET //127.0.0.1:{sink}/api/headers HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /sink-stats HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    (b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n", 404),
])
def test_other_destinations_are_refused(proxy, sink, request_bytes, status):
    data = request_bytes.replace(b"{sink}", str(sink.port).encode())
    data = data.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    got, body = raw_request(proxy.port, data)
    assert got == status
    assert b"headers" not in body and b"requests" not in body  # nothing came from the sink


def test_host_header_never_picks_the_upstream(proxy, sink):
    before = requests.get(f"http://127.0.0.1:{sink.port}/sink-stats", timeout=10).json()["requests"]
    resp = requests.get(f"{proxy.url}/api/version", timeout=10,
                        headers={**ALICE, "Host": f"127.0.0.1:{sink.port}"})
    assert resp.json() == {"version": "0.1.0"}  # the server answered, not the sink
    after = requests.get(f"http://127.0.0.1:{sink.port}/sink-stats", timeout=10).json()["requests"]
    assert after == before + 1  # only our own stats request


def test_only_safe_headers_reach_the_upstream(sink_proxy):
    resp = requests.get(f"{sink_proxy.url}/api/headers", timeout=10, headers={
        "Authorization": "Bearer tok", "Cookie": "s=1", "Proxy-Authorization": "Basic x",
        "X-Forwarded-For": "10.9.9.9", "X-Secret": "leak"})
    seen = {k.lower(): v for k, v in resp.json().items()}
    assert seen["authorization"] == "Bearer tok"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    for name in ("cookie", "proxy-authorization", "x-secret"):
        assert name not in seen


def _hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_50mb_bodies_stream_both_ways_without_buffering(sink_proxy):
    size, block = 50 * 1024 * 1024, bytes(range(256)) * 256
    requests.get(f"{sink_proxy.url}/api/headers", timeout=10)  # warm up the proxy's code paths
    before = _hwm_kib(sink_proxy.pid)
    expected = hashlib.sha256()

    def body():
        for _ in range(size // len(block)):
            expected.update(block)
            yield block

    resp = requests.post(f"{sink_proxy.url}/api/sink", data=body(), timeout=60)
    assert resp.status_code == 200
    assert resp.json() == {"bytes": size, "sha256": expected.hexdigest()}
    with requests.get(f"{sink_proxy.url}/api/big?n={size}", stream=True, timeout=60) as down:
        assert down.status_code == 200
        assert sum(len(c) for c in down.iter_content(65536)) == size
    growth_mib = (_hwm_kib(sink_proxy.pid) - before) / 1024
    assert growth_mib < 20, f"proxy peak memory grew by {growth_mib:.0f} MiB"


def test_limits_timeouts_and_redirects(sink_proxy, tmp_path):
    declared = raw_request(sink_proxy.port, b"POST /api/sink HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: 62914561\r\nConnection: close\r\n\r\n")
    assert declared[0] == 413
    slow = requests.get(f"{sink_proxy.url}/api/slow", timeout=10)
    assert slow.status_code == 504
    moved = requests.get(f"{sink_proxy.url}/api/redirect", allow_redirects=False, timeout=10)
    assert moved.status_code == 302  # passed back unchanged, never followed by the proxy
    assert moved.headers["Location"] == "http://example.invalid/api/elsewhere"


def test_chunked_body_over_the_limit_is_cut_off(sink, tmp_path):
    small = ProxyProcess(tmp_path / "small", f"http://127.0.0.1:{sink.port}",
                         "--max-body-bytes", "100000", name="small").start()
    try:
        resp = requests.post(f"{small.url}/api/sink", data=iter([b"x" * 65536] * 4), timeout=10)
        assert resp.status_code == 413
        ok = requests.post(f"{small.url}/api/sink", data=iter([b"x" * 1000] * 3), timeout=10)
        assert ok.json()["bytes"] == 3000
    finally:
        small.stop()


def test_unreachable_upstream(tmp_path):
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy = ProxyProcess(tmp_path / "down", f"http://127.0.0.1:{port}", name="down").start()
    try:
        assert f"outbound access to server http://127.0.0.1:{port}: FAILED (" in proxy.log()
        health = requests.get(f"{proxy.url}/health", timeout=10)
        assert health.status_code == 503 and health.json()["upstream"] == "unreachable"
        assert requests.get(f"{proxy.url}/api/version", timeout=10).status_code == 502
    finally:
        proxy.stop()
