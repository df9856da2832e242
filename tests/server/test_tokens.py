import base64
import json

import pytest

from dummy_server import tokens
from dummy_server.errors import TokenError

SECRET = b"unit-test-secret-0123456789"
CLAIMS = tokens.Claims(task_id=7, run_id=11, node_id="node-a", exp=1000)


def test_sign_then_verify_returns_the_claims():
    assert tokens.verify(SECRET, tokens.sign(SECRET, CLAIMS), now=999) == CLAIMS


def test_expired_token_is_refused():
    with pytest.raises(TokenError, match="expired"):
        tokens.verify(SECRET, tokens.sign(SECRET, CLAIMS), now=1000)


def test_other_secret_is_refused():
    with pytest.raises(TokenError, match="signature"):
        tokens.verify(b"another-secret-0123456789", tokens.sign(SECRET, CLAIMS), now=0)


def test_tampered_payload_is_refused():
    body, mac = tokens.sign(SECRET, CLAIMS).split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["task_id"] = 8
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError, match="signature"):
        tokens.verify(SECRET, f"{forged}.{mac}", now=0)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", ".x", "x.", "!!!.???", "a" * 10 + ".%%"])
def test_malformed_tokens_are_refused(token):
    with pytest.raises(TokenError):
        tokens.verify(SECRET, token, now=0)


def test_signed_non_json_payload_is_refused():
    import hashlib
    import hmac
    body = base64.urlsafe_b64encode(b"not json").rstrip(b"=").decode()
    mac = base64.urlsafe_b64encode(
        hmac.new(SECRET, body.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    with pytest.raises(TokenError, match="payload"):
        tokens.verify(SECRET, f"{body}.{mac}", now=0)


# --- lifetime and node binding (Service.authenticate, CONTRACTS §3) ------------------------------

from dummy_server.config import ServerConfig  # noqa: E402
from dummy_server.errors import Forbidden, Unauthorized  # noqa: E402
from dummy_server.service import Container, Service  # noqa: E402
from dummy_server.store import TERMINAL, Store  # noqa: E402
from dummy_server.validation import parse_task_request  # noqa: E402

KEYS = {"key-of-node-a": "node-a", "key-of-node-b": "node-b"}


@pytest.fixture
def service(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    config = ServerConfig(token_secret=SECRET, node_keys=KEYS,
                          researcher_keys={"key-of-alice": "alice"})
    yield Service(config, store, clock=lambda: 500.0)
    store.close()


def _run_and_token(service, node="node-a"):
    task_id, runs = service.store.create_rich_task(parent_id=None, name=None, image="x",
                                                   owner="alice", spec={}, nodes=[node])
    run = runs[0]
    token = tokens.sign(SECRET, tokens.Claims(task_id, run["id"], node, exp=1000))
    return task_id, run["id"], token


def test_a_live_runs_token_is_accepted_only_with_its_nodes_identity(service):
    _, run_id, token = _run_and_token(service, "node-b")
    assert isinstance(service.authenticate(token, "key-of-node-b"), Container)
    with pytest.raises(Unauthorized, match=r"only through a node's proxy \(no node identity\)"):
        service.authenticate(token, None)
    with pytest.raises(Unauthorized, match="unknown node identity") as unknown:
        service.authenticate(token, "key-of-nobody")
    assert "key-of-nobody" not in str(unknown.value)
    with pytest.raises(Forbidden) as foreign:
        service.authenticate(token, "key-of-node-a")
    assert str(foreign.value) == ("container token of a run of node 'node-b' was presented "
                                  "through the proxy of node 'node-a'")
    # a researcher key needs no proxy, and is not a node identity either
    with pytest.raises(Unauthorized, match="unknown node identity"):
        service.authenticate(token, "key-of-alice")
    assert service.authenticate("key-of-alice", None).name == "alice"


@pytest.mark.parametrize("status", ["pending", "initializing", "active"])
def test_tokens_live_while_their_run_is_not_final(service, status):
    _, run_id, token = _run_and_token(service)
    pk = service.store.run_of_node(run_id, "node-a")["pk"]
    service.store.set_status(pk, status, None)
    assert service.authenticate(token, "key-of-node-a").claims.run_id == run_id


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_a_final_status_ends_the_token(service, status):
    _, run_id, token = _run_and_token(service)
    service.store.set_status(service.store.run_of_node(run_id, "node-a")["pk"], status, None)
    with pytest.raises(TokenError, match=f"container token of run {run_id} is no longer valid: "
                                         f"the run (is completed|was killed|ended as '{status}')"):
        service.authenticate(token, "key-of-node-a")


def test_a_result_ends_the_token_even_before_a_final_status(service):
    _, run_id, token = _run_and_token(service)
    pk = service.store.run_of_node(run_id, "node-a")["pk"]
    service.store.set_status(pk, "active", None)
    service.store.store_result(pk, "completed", "42", "")
    with pytest.raises(TokenError, match="no longer valid: the run is completed"):
        service.authenticate(token, "key-of-node-a")


def test_expiry_still_applies_to_a_live_run(service):
    task_id, run_id, _ = _run_and_token(service)
    old = tokens.sign(SECRET, tokens.Claims(task_id, run_id, "node-a", exp=400))
    with pytest.raises(TokenError, match="token expired"):
        service.authenticate(old, "key-of-node-a")


def test_subtasks_only_from_an_active_parent(service):
    task_id, run_id, token = _run_and_token(service)
    pk = service.store.run_of_node(run_id, "node-a")["pk"]
    req = parse_task_request({"image": "x"}, service.config.node_ids)
    who = service.authenticate(token, "key-of-node-a")
    with pytest.raises(Forbidden, match=f"run {run_id} is pending: a subtask can be created only "
                                        f"while its parent run is active"):
        service.create_task(who, req)
    service.store.set_status(pk, "active", None)
    created, messages = service.create_task(who, req)
    assert service.store.task(created["id"])["parent_id"] == task_id
    assert [m.room for m in messages] == ["node:node-a"]


def test_a_confirmed_kill_ends_the_tokens_at_once(service):
    task_id, run_id, token = _run_and_token(service)
    messages = service.kill_confirmed(task_id, {"node-a": {"killed": [run_id], "not_running": [],
                                                           "unknown": []}})
    assert service.store.run_of_node(run_id, "node-a")["status"] == "killed by user"
    assert [(m.event, m.data["status"]) for m in messages] == [("task_status", "killed by user")]
    with pytest.raises(TokenError, match="no longer valid: the run was killed"):
        service.authenticate(token, "key-of-node-a")
    # answers naming other tasks' runs, or no runs, change nothing
    other_task, other_run, _ = _run_and_token(service)
    assert service.kill_confirmed(task_id, {"node-a": {"killed": [other_run]},
                                            "node-b": {"error": "node offline"}}) == []
    assert service.store.run_of_node(other_run, "node-a")["status"] == "pending"
