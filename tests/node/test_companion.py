"""Companion services (CONTRACTS §10): the payload's `service`, the sidecar it becomes, and the
server passing it on (the status side: test_companion_status.py)."""
from __future__ import annotations

import copy
import json

import kubernetes_validate
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.companion import SERVICE_ANNOTATION, probe_timing, read_annotation
from node.errors import PayloadError
from node.manifests import build_job, build_network_policy
from node.models import parse_command
from tests.node.test_manifests import PROXY, make_config, prototype, rich

CONFIG = make_config(job={"deadline_seconds": 600})


def service(**over):
    svc = {"image": "v6-demo/query-service", "port": 8000, "readiness": {"http_path": "/ready"},
           "databases": ["default"], "env": {"QUERY_DATABASE": "default"}, "ready_timeout_seconds": 30}
    svc.update(over)
    return {k: v for k, v in svc.items() if v is not None}


def with_service(svc=None, **over):
    return rich(service=service() if svc is None else svc, **over)


def refused(payload, config=CONFIG) -> PayloadError:
    with pytest.raises(PayloadError) as info:
        parse_command(payload, config)
    return info.value


# --- the payload ---------------------------------------------------------------------------------

def test_a_rich_payload_without_a_service_has_none():
    assert parse_command(rich(), CONFIG).service is None


def test_a_service_is_read_with_its_defaults():
    cmd = parse_command(with_service({"image": "v6-demo/query-service", "port": 8000}), CONFIG)
    svc = cmd.service
    assert (svc.image, svc.port, svc.http_path, svc.env, svc.databases) == \
        ("v6-demo/query-service", 8000, None, (), ())
    assert svc.ready_timeout_seconds == 60 and svc.check == "TCP connect to port 8000"


def test_the_default_ready_timeout_never_passes_the_run_deadline():
    cmd = parse_command(with_service({"image": "v6-demo/query-service", "port": 1},
                                     deadline_seconds=20), CONFIG)
    assert cmd.service.ready_timeout_seconds == 20


# (service object, words the error must hold, status)
BAD = [
    ("not an object", ["service must be an object, got string"], "failed"),
    ({"port": 8000}, ["service.image is required"], "failed"),
    ({"image": "v6-demo/q"}, ["service.port is required"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "prot": 2}, ["service has unknown fields", "prot"], "failed"),
    ({"image": 5, "port": 1}, ["service.image must be a string"], "failed"),
    ({"image": "", "port": 1}, ["service.image must not be empty"], "failed"),
    ({"image": "Bad Image", "port": 1}, ["service.image", "not a valid image reference"], "failed"),
    ({"image": "evil/miner", "port": 1}, ["service.image 'evil/miner' is not on this node's allow-list"],
     "not allowed"),
    ({"image": "v6-demo/q", "port": 0}, ["service.port must be an integer from 1 to 65535, got 0"], "failed"),
    ({"image": "v6-demo/q", "port": 65536}, ["service.port", "65536"], "failed"),
    ({"image": "v6-demo/q", "port": True}, ["service.port", "True"], "failed"),
    ({"image": "v6-demo/q", "port": "80"}, ["service.port", "'80'"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "readiness": {"http_path": "ready"}},
     ["service.readiness.http_path must be a path starting with '/'"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "readiness": {"http_path": "/a b"}},
     ["service.readiness.http_path"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "readiness": {"tcp": False}}, ["service.readiness.tcp must be true"],
     "failed"),
    ({"image": "v6-demo/q", "port": 1, "readiness": {"tcp": True, "http_path": "/x"}},
     ["service.readiness must be"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "readiness": "tcp"}, ["service.readiness must be"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "env": ["A=1"]}, ["service.env must be an object"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "env": {"1A": "x"}}, ["service.env name '1A' is not a valid"],
     "failed"),
    ({"image": "v6-demo/q", "port": 1, "env": {"A-B": "x"}}, ["service.env name 'A-B'"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "env": {"A": 1}}, ["service.env.A must be a string"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "env": {"A": "a\0b"}}, ["service.env.A", "NUL"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "env": {"SERVICE_PORT": "1"}},
     ["service.env name SERVICE_PORT is set by the node"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "env": {"DATABASE_URI_DEFAULT": "/etc"}},
     ["service.env name DATABASE_URI_DEFAULT is set by the node"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "env": {"RUN_ID": "1"}}, ["service.env name RUN_ID"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "databases": "default"},
     ["service.databases must be a list of database labels"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "databases": ["Bad!"]},
     ["service.databases[0] 'Bad!' is not a valid database label"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "databases": ["default", "default"]},
     ["service.databases[1] 'default' is given twice"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "databases": ["secret"]},
     ["service.databases: database 'secret' is not available on this node"], "not allowed"),
    ({"image": "v6-demo/q", "port": 1, "ready_timeout_seconds": 0},
     ["service.ready_timeout_seconds must be a positive integer, got 0"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "ready_timeout_seconds": 2.5},
     ["service.ready_timeout_seconds must be a positive integer"], "failed"),
    ({"image": "v6-demo/q", "port": 1, "ready_timeout_seconds": 601},
     ["service.ready_timeout_seconds 601 is more than the run's deadline (600s)"], "failed"),
]


@pytest.mark.parametrize("svc,words,status", BAD, ids=[str(i) for i in range(len(BAD))])
def test_a_bad_service_is_refused_naming_the_field(svc, words, status):
    e = refused(with_service(svc))
    assert e.run_id == 7 and e.status == status
    for word in words:
        assert word in e.message, e.message


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)
FIELD_VALUES = st.fixed_dictionaries({}, optional={
    "image": st.sampled_from(["v6-demo/q", "evil/x", ""]) | JSON, "port": st.integers(-5, 70000) | JSON,
    "readiness": st.sampled_from([{"tcp": True}, {"http_path": "/r"}]) | JSON,
    "env": st.dictionaries(st.text(max_size=12), st.text(max_size=5) | JSON, max_size=3) | JSON,
    "databases": st.lists(st.sampled_from(["default", "db-2", "nope", "X"]), max_size=3) | JSON,
    "ready_timeout_seconds": st.integers(-2, 700) | JSON})


@settings(max_examples=300, deadline=None)
@given(FIELD_VALUES | JSON)
def test_any_service_value_is_read_or_refused_with_a_payload_error(svc):
    try:
        cmd = parse_command(rich(service=svc), CONFIG)
    except PayloadError as e:
        assert e.run_id == 7 and e.message.startswith("run 7: ")
        return
    assert svc is None or (cmd.service.image == svc["image"] and 1 <= cmd.service.port <= 65535)
    if cmd.service is not None:
        kubernetes_validate.validate(build_job(cmd, CONFIG, PROXY), "1.30", strict=True)


def test_the_ready_timeout_is_checked_against_the_tasks_own_deadline():
    e = refused(with_service(service(ready_timeout_seconds=31), deadline_seconds=30))
    assert "service.ready_timeout_seconds 31 is more than the run's deadline (30s)" in e.message


def test_a_service_port_may_not_take_the_live_channels_ports():
    config = make_config(live={"enabled": True, "pub_port": 6001, "rep_port": 6002})
    e = refused(with_service(service(port=6002)), config)
    assert "service.port 6002 is taken by the live channel's sidecar" in e.message


def test_prototype_payloads_cannot_name_a_service():
    e = refused(prototype(service=service()))
    assert "rich fields ['service']" in e.message


# --- the pod -------------------------------------------------------------------------------------

def job_of(payload, config=CONFIG):
    return build_job(parse_command(payload, config), config, PROXY)


def spec_of(job):
    return job["spec"]["template"]["spec"]


def test_the_service_is_a_native_sidecar_with_startup_and_readiness_probes():
    job = job_of(with_service())
    spec = spec_of(job)
    [svc] = spec["initContainers"]
    algo = spec["containers"][0]
    assert svc["name"] == "service" and svc["restartPolicy"] == "Always"
    assert svc["image"] == "v6-demo/query-service"
    assert svc["ports"] == [{"name": "service", "containerPort": 8000, "protocol": "TCP"}]
    http = {"httpGet": {"path": "/ready", "port": 8000, "scheme": "HTTP"}}
    start = svc["startupProbe"]
    assert {k: start[k] for k in http} == http and start["successThreshold"] == 1
    # the probe gives up after about ready_timeout_seconds
    assert start["periodSeconds"] * start["failureThreshold"] == 30 and start["periodSeconds"] == 1
    assert {k: svc["readinessProbe"][k] for k in http} == http
    assert svc["securityContext"] == algo["securityContext"]
    assert svc["securityContext"]["readOnlyRootFilesystem"] is True
    assert svc["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert svc["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    kubernetes_validate.validate(job, "1.30", strict=True)


def test_a_tcp_check_is_a_tcp_socket_probe():
    job = job_of(with_service(service(readiness={"tcp": True})))
    [svc] = spec_of(job)["initContainers"]
    assert svc["startupProbe"]["tcpSocket"] == {"port": 8000} and "httpGet" not in svc["startupProbe"]
    assert svc["readinessProbe"]["tcpSocket"] == {"port": 8000}


@pytest.mark.parametrize("timeout", [1, 7, 60, 119, 120, 121, 3599])
def test_the_startup_probe_covers_the_ready_timeout(timeout):
    period, failures = probe_timing(timeout)
    assert timeout <= period * failures < timeout + period
    assert failures <= 120 and period >= 1


def test_the_algorithm_gets_the_service_address_and_the_service_its_port_and_databases():
    spec = spec_of(job_of(with_service()))
    algo_env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert (algo_env["SERVICE_HOST"], algo_env["SERVICE_PORT"], algo_env["SERVICE_URL"]) == \
        ("127.0.0.1", "8000", "http://127.0.0.1:8000")
    [svc] = spec["initContainers"]
    env = {e["name"]: e["value"] for e in svc["env"]}
    assert env == {"QUERY_DATABASE": "default", "RUN_ID": "7", "SERVICE_PORT": "8000", "TMPDIR": "/app/tmp",
                   "DATABASE_LABELS": "default", "DATABASE_URI_DEFAULT": "/app/input/csv/default",
                   "DATABASE_TYPE_DEFAULT": "csv"}
    # no token, no task files, no output for the service
    assert not {"TOKEN_FILE", "INPUT_FILE", "OUTPUT_DIR"} & set(env)


def test_the_service_mounts_only_its_databases_read_only_reusing_the_algorithms_volumes():
    spec = spec_of(job_of(with_service(service(databases=["default", "images"]))))
    [svc] = spec["initContainers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in svc["volumeMounts"]}
    assert set(mounts) == {"/app/input/csv/default", "/app/input/csv/images", "/app/tmp"}
    assert all(m["readOnly"] for p, m in mounts.items() if p != "/app/tmp")
    # "default" is the algorithm's db-1 volume too; "images" is the service's own
    assert volumes[mounts["/app/input/csv/default"]["name"]]["hostPath"] == \
        {"path": "/data/employees.csv", "type": "File"}
    assert mounts["/app/input/csv/images"]["name"] == "service-db-1"
    assert volumes["service-db-1"]["hostPath"] == {"path": "/data/images", "type": "Directory"}
    assert volumes[mounts["/app/tmp"]["name"]] == {"name": "service-tmp", "emptyDir": {"sizeLimit": "64Mi"}}
    algo_mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    assert "/app/input/csv/images" not in algo_mounts and "service-tmp" not in algo_mounts.values()


def test_pvc_mode_mounts_the_services_databases_from_the_claim():
    config = make_config(storage={"mode": "pvc", "claim_name": "v6-data"},
                         databases=[{"label": "default", "uri": "data/employees.csv", "type": "csv"}],
                         task_dir="/claim/tasks")
    job = job_of(rich(databases=["default"], service=service()), config)
    [svc] = spec_of(job)["initContainers"]
    assert {"name": "data", "mountPath": "/app/input/csv/default", "readOnly": True,
            "subPath": "data/employees.csv"} in svc["volumeMounts"]
    kubernetes_validate.validate(job, "1.30", strict=True)


def test_with_the_live_channel_the_service_comes_after_its_sidecar():
    config = make_config(job={"deadline_seconds": 600}, live={"enabled": True})
    job = job_of(with_service(), config)
    assert [c["name"] for c in spec_of(job)["initContainers"]] == ["live", "service"]
    kubernetes_validate.validate(job, "1.30", strict=True)


def test_the_pod_carries_what_the_status_needs_to_explain_a_failure():
    job = job_of(with_service())
    info = read_annotation(job["spec"]["template"]["metadata"]["annotations"])
    assert info == {"image": "v6-demo/query-service", "ready_timeout_seconds": 30,
                    "check": "HTTP GET /ready on port 8000", "probe_failures": 30}
    assert read_annotation({SERVICE_ANNOTATION: "{not json"}) is None
    assert read_annotation({}) is None


def test_without_a_service_the_pod_is_as_before():
    plain, same = job_of(rich()), job_of(rich())
    assert plain == same and "initContainers" not in spec_of(plain)
    assert "annotations" not in plain["spec"]["template"]["metadata"]


def test_the_network_policy_does_not_change_for_a_service():
    # the service lives in the algorithm's pod: nothing new is reachable from outside it
    assert build_network_policy(CONFIG, PROXY)["spec"]["ingress"] == []
    job = job_of(with_service())
    assert "hostPort" not in json.dumps(job) and "hostNetwork" not in json.dumps(job)


# --- passing it on (dummy_server: task API and recipes) -----------------------------------------

def test_the_server_passes_a_service_on_unchanged_and_refuses_a_non_object():
    from dummy_server.errors import BadRequest
    from dummy_server.validation import parse_task_request
    body = {"image": "v6-demo/avg-service", "input": {"column": "Age"}, "databases": ["default"],
            "service": service()}
    req = parse_task_request(copy.deepcopy(body), ["node-a"])
    assert req.spec()["service"] == body["service"]
    assert "service" not in parse_task_request({"image": "v6-demo/avg"}, ["node-a"]).spec()
    with pytest.raises(BadRequest, match="^service: expected an object"):
        parse_task_request({**body, "service": ["v6-demo/query-service"]}, ["node-a"])


def test_a_recipe_may_name_a_service():
    from dummy_server.recipe import RecipeError, parse_recipe
    [task] = parse_recipe("tasks:\n  - image: v6-demo/avg-service\n    input: {column: Age}\n"
                          "    service: {image: v6-demo/query-service, port: 8000,\n"
                          "              readiness: {http_path: /ready}, databases: [default]}\n")
    assert task.body["service"] == {"image": "v6-demo/query-service", "port": 8000,
                                    "readiness": {"http_path": "/ready"}, "databases": ["default"]}
    with pytest.raises(RecipeError, match=r"^<recipe>:3: tasks\[0\]\.service: expected a mapping"):
        parse_recipe("tasks:\n  - image: v6-demo/avg-service\n    service: v6-demo/query-service\n")
