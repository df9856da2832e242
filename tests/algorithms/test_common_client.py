"""algorithms.common.client against the fake server API on 127.0.0.1."""
from __future__ import annotations

import socket

import pytest

from algorithms.common.client import ServerClient, read_token
from algorithms.common.env import load_env
from algorithms.common.errors import EnvError, ServerError, SubtaskError

from .helpers import FakeApi


class FakeClock:
    """Time that moves only when the client sleeps: waiting is exact and instant."""

    def __init__(self, on_sleep=None):
        self.now = 0.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(len(self.sleeps))


@pytest.fixture
def api_server(fake_server):
    api = FakeApi()
    parent = api.add_task(["node-a", "node-b"], token="tok")
    server = fake_server(api)
    return api, server, parent


def client_for(server, token="tok", clock=None):
    kwargs = {"clock": clock.time, "sleep": clock.sleep} if clock else {}
    return ServerClient(f"http://127.0.0.1:{server.port}/api", token, timeout=10, **kwargs)


def test_version(api_server):
    _, server, _ = api_server
    assert client_for(server).version() == "6.0.0-test"


def test_refused_token_gives_status_and_message(api_server):
    _, server, _ = api_server
    with pytest.raises(ServerError, match="HTTP 401: invalid token") as info:
        client_for(server, token="wrong").version()
    assert info.value.status == 401


def test_unreachable_proxy():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        client = ServerClient(f"http://127.0.0.1:{port}/api", "tok", timeout=5)
        with pytest.raises(ServerError, match="cannot reach") as info:
            client.version()
    assert info.value.status is None


def test_create_subtask_sends_the_contract_body(api_server):
    api, server, parent = api_server
    created = client_for(server).create_subtask("v6-demo/avg", {"x": 1}, ["default"],
                                                nodes=["node-b"], arguments=["a"])
    assert [r["node_id"] for r in created["runs"]] == ["node-b"]
    assert api.created == [{"image": "v6-demo/avg", "input": {"x": 1}, "databases": ["default"],
                            "nodes": ["node-b"], "arguments": ["a"], "parent_id": parent,
                            "id": created["id"]}]


def test_wait_for_results_backs_off_until_every_run_has_its_result(api_server):
    api, server, _ = api_server

    def progress(polls: int) -> None:  # the runs finish while the client waits
        if polls == 2:
            api.set_run(runs[0], "completed", data='{"sum": 1, "count": 1}')
        if polls == 4:
            api.set_run(runs[1], "failed", logs="boom")

    clock = FakeClock(progress)
    client = client_for(server, clock=clock)
    created = client.create_subtask("v6-demo/avg", {}, ["default"])
    runs = [r["id"] for r in created["runs"]]
    result = client.wait_for_results(created["id"], timeout=60)
    assert [(r["node_id"], r["status"]) for r in result] == [("node-a", "completed"),
                                                            ("node-b", "failed")]
    assert result[0]["result"]["data"] == '{"sum": 1, "count": 1}'
    assert result[1]["result"]["logs"] == "boom"
    assert len(clock.sleeps) == 4
    assert clock.sleeps == sorted(clock.sleeps) and clock.sleeps[-1] > clock.sleeps[0]


def test_completed_without_result_is_waited_for(api_server):
    api, server, _ = api_server
    clock = FakeClock()
    client = client_for(server, clock=clock)
    created = client.create_subtask("v6-demo/avg", {}, ["default"], nodes=["node-a"])
    run_id = created["runs"][0]["id"]
    with api.lock:  # status reported, result not yet in
        api.runs[run_id]["status"] = "completed"
    with pytest.raises(SubtaskError, match=r"did not finish within 3s \(run \d+ on node-a: "
                                           r"completed\)"):
        client.wait_for_results(created["id"], timeout=3)
    assert clock.now == pytest.approx(3)
    assert max(clock.sleeps) <= 2.0


def test_wait_for_results_of_someone_elses_task_fails_at_once(api_server):
    api, server, _ = api_server
    clock = FakeClock()
    with pytest.raises(ServerError, match="HTTP 404") as info:
        client_for(server, clock=clock).wait_for_results(999, timeout=60)
    assert info.value.status == 404
    assert clock.sleeps == []


def test_transient_errors_are_retried_until_the_deadline():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        clock = FakeClock()
        client = ServerClient(f"http://127.0.0.1:{closed.getsockname()[1]}/api", "tok",
                              timeout=5, clock=clock.time, sleep=clock.sleep)
        with pytest.raises(SubtaskError, match="last error: .*cannot reach"):
            client.wait_for_results(1, timeout=5)
    assert len(clock.sleeps) > 3


def test_from_env_reads_the_token(tmp_path):
    (tmp_path / "token").write_text("secret-token\n")
    env = load_env({"HOST": "http://127.0.0.1", "PORT": "9", "TOKEN_FILE": str(tmp_path / "token")})
    client = ServerClient.from_env(env)
    assert client.base_url == "http://127.0.0.1:9/api"
    assert "secret-token" not in repr(client)
    (tmp_path / "token").write_text("  \n")
    with pytest.raises(EnvError, match="is empty"):
        read_token(tmp_path / "token")
    with pytest.raises(EnvError, match="cannot read the container token"):
        read_token(tmp_path / "absent")


def test_environment_proxy_settings_are_ignored(api_server, monkeypatch):
    """HOST/PORT is the node's proxy already; an HTTP_PROXY must not divert the requests."""
    _, server, _ = api_server
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed.getsockname()[1]}")
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{closed.getsockname()[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert client_for(server).version() == "6.0.0-test"


def test_a_malformed_answer_is_not_retried(api_server):
    api, server, parent = api_server
    clock = FakeClock()
    with api.lock:
        api.tasks[parent]["run_ids"] = []
    original = api.task_view
    api.task_view = lambda task_id: dict(original(task_id), runs="nope")
    with pytest.raises(ServerError, match="answer has no list of runs") as info:
        client_for(server, clock=clock).wait_for_results(parent, timeout=60)
    assert not info.value.transient
    assert clock.sleeps == []
