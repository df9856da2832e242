"""Task payload validation, statuses and report shapes (CONTRACTS §2, §5)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.config import parse_config
from node import models
from node.errors import ConfigError, PayloadError
from node.models import (Result, StatusReport, TaskStatus, has_failed, image_allowed, is_terminal,
                         parse_command)

FAILED, NOT_ALLOWED = "failed", "not allowed"


def make_config(**over):
    data = {"node_id": "node-a", "api_key": "k", "server_url": "http://127.0.0.1:5000",
            "task_dir": "/var/lib/v6-node/tasks",
            "databases": [{"label": "default", "uri": "/data/a.csv"}, {"label": "db-2", "uri": "/data/b.csv"}],
            "images": {"allowed": ["v6-demo/*", "registry.example.org:5000/team/algo:1.*", "*/ok:1"]}}
    data.update(over)
    return parse_config(data, {})


CONFIG = make_config()


def prototype(**over):
    payload = {"run_id": 33333312,
               "task_info": {"arg1": "/app/input/csv/default", "arg2": "Age", "arg3": "/app/output/avg.txt"},
               "image": "v6-demo/avg", "docker_input": "input1", "tmp_vol_name": "example-tmp-vol",
               "token": "example_token", "databases_to_use": ["default"]}
    payload.update(over)
    return payload


def rich(**over):
    payload = {"run_id": 7, "task_id": 5, "parent_id": None, "image": "v6-demo/avg:1.0",
               "arguments": ["a"], "input": {"x": [1, 2]}, "databases": ["default"], "token": "tok"}
    payload.update(over)
    return payload


def refused(payload, status=FAILED, *, config=CONFIG) -> PayloadError:
    with pytest.raises(PayloadError) as info:
        parse_command(payload, config)
    assert info.value.status == status, str(info.value)
    assert info.value.message == str(info.value)
    return info.value


# --- statuses ----------------------------------------------------------------------------------

def test_status_values_are_vantage6s():
    assert [s.value for s in TaskStatus] == [
        "pending", "initializing", "active", "completed", "failed", "start failed", "non-existing Docker image",
        "crashed", "killed by user", "not allowed", "unknown error"]
    assert TaskStatus("crashed") is TaskStatus.CRASHED
    assert json.dumps({"s": TaskStatus.ACTIVE}) == '{"s": "active"}'


def test_terminal_and_failed():
    running = {"pending", "initializing", "active"}
    for s in TaskStatus:
        assert is_terminal(s) == (s.value not in running)
        assert has_failed(s) == (s.value not in running | {"completed"})
    assert is_terminal("completed") and not has_failed("completed")


# --- the prototype shape -----------------------------------------------------------------------

def test_prototype_payload():
    cmd = parse_command(prototype(), CONFIG)
    assert (cmd.run_id, cmd.task_id, cmd.parent_id) == (33333312, 33333312, None)
    assert cmd.image == "v6-demo/avg"
    assert cmd.arguments == ("/app/input/csv/default", "Age", "/app/output/avg.txt")
    assert cmd.input_bytes == b"input1"
    assert cmd.databases == ("default",)
    assert cmd.token == "example_token"
    assert cmd.shape == "prototype"
    assert cmd.deadline_seconds == 3600
    assert dict(cmd.resources.requests) == {"cpu": "100m", "memory": "128Mi"}
    assert (dict(cmd.resources.limits), cmd.resources.gpu) == ({"cpu": "1", "memory": "512Mi"}, 0)


def test_token_not_in_repr():
    assert "example_token" not in repr(parse_command(prototype(), CONFIG))


def test_task_info_numbers_become_args_in_order():
    cmd = parse_command(prototype(task_info={"z": 1, "a": 2.5, "m": "x"}), CONFIG)
    assert cmd.arguments == ("1", "2.5", "x")


def test_no_databases_is_allowed():
    assert parse_command(prototype(databases_to_use=[]), CONFIG).databases == ()


# --- the rich shape ----------------------------------------------------------------------------

def test_rich_payload():
    cmd = parse_command(rich(parent_id=3, resources={"cpu": "2", "memory": "1Gi", "gpu": 1},
                             deadline_seconds=60, databases=["db-2", "default"]), CONFIG)
    assert (cmd.run_id, cmd.task_id, cmd.parent_id, cmd.shape) == (7, 5, 3, "rich")
    assert cmd.arguments == ("a",)
    assert json.loads(cmd.input_bytes) == {"x": [1, 2]}
    assert cmd.databases == ("db-2", "default")
    assert cmd.deadline_seconds == 60
    assert dict(cmd.resources.limits) == {"cpu": "2", "memory": "1Gi"}
    assert dict(cmd.resources.requests) == {"cpu": "100m", "memory": "128Mi"}
    assert cmd.resources.gpu == 1


def test_rich_optional_fields():
    payload = rich()
    for k in ("parent_id", "arguments", "input"):
        del payload[k]
    cmd = parse_command(payload, CONFIG)
    assert (cmd.parent_id, cmd.arguments, cmd.input_bytes) == (None, (), b"null")


def test_rich_input_keeps_unicode():
    assert json.loads(parse_command(rich(input="é€"), CONFIG).input_bytes.decode("utf-8")) == "é€"


# --- malformed: failed, with the run id when it could be read ---------------------------------

@pytest.mark.parametrize("raw,words", [
    (None, "must be a JSON object, got null"),
    ([prototype()], "got list"),
    ("{}", "got string"),
    ({}, "lacks required fields"),
    (prototype(run_id=True), "run_id must be an integer, got boolean"),
    (prototype(run_id="42"), "run_id must be an integer, got string"),
    (prototype(run_id=0), "positive integer below 2**53"),
    (prototype(run_id=-3), "positive integer"),
    (prototype(run_id=2**53), "below 2**53"),
    (prototype(run_id=1.0), "must be an integer, got number"),
])
def test_no_usable_run_id(raw, words):
    err = refused(raw)
    assert err.run_id is None
    assert words in str(err)


@pytest.mark.parametrize("payload,words", [
    (prototype(task_info=["a"]), "task_info must be an object"),
    (prototype(task_info={"a": {"nested": 1}}), "must be a string or a number, got object"),
    (prototype(task_info={"a": [1]}), "got list"),
    (prototype(task_info={"a": None}), "got null"),
    (prototype(task_info={"a": True}), "got boolean"),
    (prototype(task_info={"a": float("inf")}), "not plain JSON"),
    (prototype(task_info={"a": "x\0y"}), "NUL"),
    (prototype(image=None), "image must be a string"),
    (prototype(image=""), "image must not be empty"),
    (prototype(image="v6-demo/" + "a" * 600), "image is too long"),
    (prototype(docker_input=5), "docker_input must be a string"),
    (prototype(tmp_vol_name="../etc"), "tmp_vol_name '../etc' is not a valid volume name"),
    (prototype(tmp_vol_name="a/b"), "tmp_vol_name"),
    (prototype(tmp_vol_name="tmp\0"), "tmp_vol_name"),
    (prototype(tmp_vol_name="Tmp"), "tmp_vol_name"),
    (prototype(tmp_vol_name="a" * 64), "tmp_vol_name is too long"),
    (prototype(token=""), "token must not be empty"),
    (prototype(token=None), "token must be a string"),
    (prototype(token="a\nb"), "line breaks"),
    (prototype(token="a\0b"), "NUL"),
    (prototype(token="x" * (16 * 1024 + 1)), "larger than 16384 bytes"),
    (prototype(databases_to_use="default"), "must be a list"),
    (prototype(databases_to_use=[1]), "databases_to_use[0] must be a string, got integer"),
    (prototype(databases_to_use=["default", "default"]), "given twice"),
    (prototype(target_nodes=["node-a"]), "unknown fields: ['target_nodes']"),
    ({k: v for k, v in prototype().items() if k != "token"}, "lacks required fields: token"),
    (rich(task_id=True), "task_id must be an integer, got boolean"),
    (rich(task_id=None), "task_id must be an integer, got null"),
    (rich(parent_id=0), "parent_id must be a positive integer"),
    (rich(parent_id="3"), "parent_id must be an integer"),
    (rich(arguments="a b"), "arguments must be a list"),
    (rich(arguments=[1]), "arguments[0] must be a string, got integer"),
    (rich(arguments=["a\0"]), "NUL"),
    (rich(databases=None), "databases must be a list"),
    (rich(resources="big"), "resources must be an object"),
    (rich(resources={"cpu": "-1"}), "is not a Kubernetes quantity"),
    (rich(resources={"cpu": "0"}), "must be more than 0"),
    (rich(resources={"cpu": True}), "not a Kubernetes quantity"),
    (rich(resources={"gpu": "1"}), "resources.gpu must be a non-negative integer"),
    (rich(resources={"gpu": -1}), "non-negative"),
    (rich(resources={"disk": "1Gi"}), "unknown fields"),
    (rich(deadline_seconds=0), "at least 1"),
    (rich(deadline_seconds="60"), "must be an integer"),
    (rich(deadline_seconds=True), "must be an integer, got boolean"),
    (rich(resourcez={}), "unknown fields: ['resourcez']"),
    (rich(input=b"\x00binary"), "not plain JSON"),
    (rich(input=float("nan")), "not plain JSON"),
    (prototype(token="ab\ud800"), "invalid Unicode"),
    (prototype(task_info={"a": "\udfff"}), "invalid Unicode"),
    ({**rich(), "docker_input": "x"}, "mixes prototype fields"),
    ({"run_id": 4, "image": "v6-demo/avg", "token": "t"}, "rich payload lacks required fields: databases, task_id"),
])
def test_malformed(payload, words):
    err = refused(payload, FAILED)
    assert words in str(err)
    assert err.run_id == payload["run_id"]
    assert str(err).startswith(f"run {payload['run_id']}: ")


@pytest.mark.parametrize("trick", ["../1", "1/../2", "%2e%2e", "\uff14\uff12", "42\0", "42\n", " 42", "4e1",
                                   [42], {"id": 42}, 42.0])
def test_id_tricks(trick):
    err = refused(prototype(run_id=trick))
    assert err.run_id is None and "run_id must be an integer" in str(err)
    err = refused(rich(task_id=trick))
    assert err.run_id == 7 and "task_id must be an integer" in str(err)
    assert str(err).isascii()


@pytest.mark.parametrize("name", ["%2e%2e", "..", "a.b", "tmp\u0430", "-tmp", ""])
def test_tmp_vol_name_tricks(name):
    assert "tmp_vol_name" in str(refused(prototype(tmp_vol_name=name)))


@pytest.mark.parametrize("label", [
    "../etc", "a/b", "%2e%2e", "..", ".", "/abs", "Default", "dеfault",  # Cyrillic е
    "default\0", "default\n", "", "a" * 64, "-a", "a-", "de fault", "ｄefault",  # fullwidth d
])
def test_bad_labels_are_malformed(label):
    err = refused(prototype(databases_to_use=[label]))
    assert "is not a valid database label" in str(err)
    assert "\0" not in str(err) and "\n" not in str(err)
    assert str(err).isascii()  # lookalikes are shown escaped


@pytest.mark.parametrize("image", [
    "v6-demo/../avg", "v6-demo/avg\0", "v6-demo/AVG", "v6-demo/avg:", "v6-demo//avg", "/v6-demo/avg",
    "v6-demo/avg:bad tag", "v6-demo/аvg",  # Cyrillic а
    "v6-demo/avg@sha256:xyz", "v6-demo/avg\n", "V6-demo/avg", "bad_host.org/avg", "host:port/avg", "http://v6-demo/avg", "v6-demo/avg:" + "t" * 129,
])
def test_bad_image_references(image):
    err = refused(prototype(image=image))
    assert "is not a valid image reference" in str(err)
    assert str(err).isascii()


def test_oversized_payload():
    config = make_config(limits={"max_payload_bytes": 1000})
    err = refused(prototype(docker_input="x" * 1000), config=config)
    assert "too large" in str(err) and "at most 1000" in str(err)
    assert err.run_id == 33333312


def test_oversized_multibyte_payload_is_measured_in_bytes():
    config = make_config(limits={"max_payload_bytes": 1000})
    small = prototype(docker_input="é" * 300)
    assert parse_command(small, config).input_bytes == ("é" * 300).encode()
    refused(prototype(docker_input="é" * 450), config=config)


def test_deeply_nested_input():
    nested: object = 1
    for _ in range(5000):
        nested = [nested]
    err = refused(rich(input=nested))
    assert err.run_id == 7


def test_huge_label_is_truncated_in_the_message():
    config = make_config(limits={"max_payload_bytes": 10**7})
    err = refused(prototype(databases_to_use=["x" * 100000]), config=config)
    assert len(str(err)) < 300


def test_token_never_in_messages():
    token = "T0KEN-" + "q" * 40
    for payload in (prototype(token=token + "\n"), prototype(token=token, image="evil/x"),
                    prototype(token=token, databases_to_use=["nope"]), prototype(token=token, run_id=True)):
        with pytest.raises(PayloadError) as info:
            parse_command(payload, CONFIG)
        assert token not in str(info.value)


# --- refused by policy: not allowed ------------------------------------------------------------

def test_unknown_database_is_not_allowed():
    err = refused(prototype(databases_to_use=["default", "db3"]), NOT_ALLOWED)
    assert "database 'db3' is not available on this node" in str(err)
    assert err.run_id == 33333312


@pytest.mark.parametrize("image", ["evil/miner", "evil/miner:latest", "docker.io/v6-demo/avg",
                                   "registry.example.org:5000/team/algo:2.0",
                                   "registry.example.org:5000/team/algo"])
def test_image_not_on_the_allow_list(image):
    err = refused(prototype(image=image), NOT_ALLOWED)
    assert "is not on this node's allow-list" in str(err)


@pytest.mark.parametrize("image", ["v6-demo/avg", "v6-demo/avg:2", "v6-demo/sub/avg", "v6-demo/a__b.c-d:T_1.x",
                                   "registry.example.org:5000/team/algo:1.4",
                                   "v6-demo/avg@sha256:" + "a" * 64, "localhost:5000/ok:1", "Reg.example/ok:1"])
def test_image_on_the_allow_list(image):
    assert parse_command(prototype(image=image), CONFIG).image == image


def test_empty_allow_list_allows_nothing():
    refused(prototype(), NOT_ALLOWED, config=make_config(images={"allowed": []}))


def test_untagged_image_matches_latest_pattern():
    assert image_allowed("v6-demo/avg", ["v6-demo/avg:latest"])
    assert not image_allowed("v6-demo/avg:1.0", ["v6-demo/avg:latest"])
    assert image_allowed("localhost:5000/avg", ["localhost:5000/avg:latest"])  # a port is not a tag
    assert not image_allowed("v6-demo/AVG", ["v6-demo/avg"])  # case-sensitive


@pytest.mark.parametrize("resources,words", [
    ({"cpu": "5"}, "resources.cpu '5' is more than this node allows (4)"),
    ({"memory": "9Gi"}, "resources.memory '9Gi' is more than this node allows (8Gi)"),
    ({"gpu": 2}, "resources.gpu 2 is more than this node allows (1)"),
])
def test_resources_above_the_maximum(resources, words):
    assert words in str(refused(rich(resources=resources), NOT_ALLOWED))


def test_deadline_above_the_node_maximum():
    assert "more than this node allows (3600)" in str(refused(rich(deadline_seconds=3601), NOT_ALLOWED))


def test_malformed_wins_over_not_allowed():
    # a bad label is reported as malformed even when the image is not allowed either
    refused(prototype(image="evil/x", databases_to_use=["../x"]), FAILED)


# --- never anything but PayloadError -----------------------------------------------------------
# These call the checks without parse_command's last-resort net, so a check that trips over odd
# input (a TypeError, say) shows up here instead of hiding behind a generic PayloadError.

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(prototype()) + sorted(rich()) + ["x"]), json_values, max_size=9))
def test_any_payload_gives_a_command_or_a_payload_error(raw):
    try:
        cmd = models._parse(raw, CONFIG)
    except PayloadError as e:
        assert e.status in (FAILED, NOT_ALLOWED)
        assert str(e)
    else:
        assert cmd.run_id == raw["run_id"]


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({k: st.just(v) for k, v in prototype().items()}),
       st.sampled_from(sorted(prototype())), json_values)
def test_prototype_with_one_field_replaced(base, key, value):
    raw = {**base, key: value}
    try:
        cmd = models._parse(raw, CONFIG)
    except PayloadError as e:
        assert e.run_id in (None, raw["run_id"])
    else:
        assert cmd.run_id == raw["run_id"]


def test_last_resort_net(monkeypatch):
    def broken(raw, config):
        raise KeyError("bug")
    monkeypatch.setattr(models, "_parse", broken)
    with pytest.raises(PayloadError, match="payload could not be read: KeyError") as info:
        parse_command(prototype(), CONFIG)
    assert info.value.status == FAILED


# --- reports -----------------------------------------------------------------------------------

def test_result_to_dict():
    r = Result(run_id=1, task_id=2, parent_id=None, status=TaskStatus.COMPLETED, data="3.5", logs="ok")
    assert r.to_dict() == {"run_id": 1, "task_id": 2, "parent_id": None, "status": "completed", "data": "3.5",
                           "logs": "ok"}
    assert json.loads(json.dumps(r.to_dict())) == r.to_dict()
    assert "3.5" not in repr(r)  # data stays out of logs


def test_status_report_to_dict():
    s = StatusReport(node_id="node-a", run_id=1, task_id=2, parent_id=9, status=TaskStatus.NO_DOCKER_IMAGE,
                     detail="ImagePullBackOff")
    assert s.to_dict() == {"node_id": "node-a", "run_id": 1, "task_id": 2, "parent_id": 9,
                           "status": "non-existing Docker image", "detail": "ImagePullBackOff"}
    assert type(s.to_dict()["status"]) is str


# --- images.digest: required --------------------------------------------------------------------
DIGEST = "sha256:" + "ab12" * 16


@pytest.mark.parametrize("image", ["v6-demo/avg", "v6-demo/avg:1.0",
                                   "v6-demo/avg@sha512:" + "ab" * 64])
def test_with_digests_required_a_tag_or_short_digest_is_not_allowed(image):
    config = make_config(images={"allowed": ["v6-demo/*"], "digest": "required"})
    with pytest.raises(PayloadError) as e:
        parse_command(prototype(image=image), config)
    assert e.value.status == NOT_ALLOWED
    assert "has no digest: this node runs only images given as name@sha256:<digest>" in str(e.value)


@pytest.mark.parametrize("image", [f"v6-demo/avg@{DIGEST}", f"v6-demo/avg:1.0@{DIGEST}"])
def test_with_digests_required_a_digest_reference_on_the_list_runs(image):
    config = make_config(images={"allowed": ["v6-demo/*"], "digest": "required"})
    assert parse_command(prototype(image=image), config).image == image
    # and the allow-list still applies to it
    with pytest.raises(PayloadError, match="allow-list"):
        parse_command(prototype(image=f"evil/miner@{DIGEST}"), config)


def test_an_allow_list_entry_may_pin_a_digest():
    config = make_config(images={"allowed": [f"v6-demo/avg@{DIGEST}"]})
    assert parse_command(prototype(image=f"v6-demo/avg@{DIGEST}"), config)
    other = "sha256:" + "cd34" * 16
    with pytest.raises(PayloadError, match="allow-list"):
        parse_command(prototype(image=f"v6-demo/avg@{other}"), config)
    with pytest.raises(PayloadError, match="allow-list"):
        parse_command(prototype(image="v6-demo/avg"), config)


def test_the_digest_policy_is_checked_in_the_configuration():
    with pytest.raises(ConfigError, match="images.digest"):
        make_config(images={"allowed": ["v6-demo/*"], "digest": "sometimes"})
