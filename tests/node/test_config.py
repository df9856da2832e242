"""Node configuration: defaults, each validation error by name, secrets (CONTRACTS §8)."""
from __future__ import annotations

from decimal import Decimal

import pytest

from node.config import NodeConfig, load_config, parse_config, parse_quantity
from node.errors import ConfigError

SECRET = "s3cr3t-api-key-value"


def minimal(**over):
    data = {"node_id": "node-a", "api_key": SECRET, "server_url": "http://127.0.0.1:5000",
            "task_dir": "/var/lib/v6-node/tasks"}
    data.update(over)
    return data


def problems(data, env=None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env or {})
    err = info.value
    assert str(err).splitlines() == [f"config: {k}: {p}" for k, p in err.problems]
    assert SECRET not in str(err)
    return dict(err.problems)


FULL_YAML = """
node_id: node-a
api_key: "s3cr3t-api-key-value"
server_url: http://127.0.0.1:5000
task_dir: /var/lib/v6-node/tasks
databases:
  - {label: default, uri: /data/employees.csv, type: csv}
  - {label: db-2, uri: /data/dir, type: folder}
kubernetes:
  kubeconfig: null
  context: null
  jobs_namespace: v6-jobs
proxy: {host: v6-proxy.v6-node.svc.cluster.local, port: 8080}
images:
  allowed: ["v6-demo/*"]
job:
  resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {cpu: "1", memory: 512Mi}}
  max_resources: {cpu: "4", memory: 8Gi, gpu: 1}
  deadline_seconds: 3600
  ttl_seconds_after_finished: 600
  backoff_limit: 0
  termination_grace_seconds: 10
  run_as_user: 1000
  run_as_group: 1000
  runtime_class_name: null
  gpu_runtime_class_name: null
storage:
  mode: hostPath
  claim_name: null
completion:
  mode: watch
  poll_interval_seconds: 1.0
  watch_timeout_seconds: 300
  request_timeout_seconds: 30
finishing:
  workers: 8
  queue_size: 1000
output:
  keep: false
  max_bytes: 10485760
limits:
  max_payload_bytes: 1048576
health: {host: 127.0.0.1, port: 8081}
"""


def test_contract_example_loads(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text(FULL_YAML)
    config = load_config(path, env={})
    assert config.node_id == "node-a"
    assert config.api_key == SECRET
    assert [(d.label, d.uri, d.type) for d in config.databases] == [
        ("default", "/data/employees.csv", "csv"), ("db-2", "/data/dir", "folder")]
    assert config.images.allowed == ("v6-demo/*",)
    assert config.job.resources.limits == {"cpu": "1", "memory": "512Mi"}
    assert config.job.max_resources.gpu == 1
    assert config.completion.request_timeout_seconds == 30.0
    assert isinstance(config.completion.request_timeout_seconds, float)
    # the example spells out the defaults
    assert config == parse_config(minimal(databases=[{"label": "default", "uri": "/data/employees.csv"},
                                                     {"label": "db-2", "uri": "/data/dir", "type": "folder"}],
                                          images={"allowed": ["v6-demo/*"]}), {})


def test_defaults():
    c = parse_config(minimal(), {})
    assert c.databases == ()
    assert c.images.allowed == ()        # nothing allowed unless configured
    assert (c.kubernetes.kubeconfig, c.kubernetes.context, c.kubernetes.jobs_namespace) == (None, None, "v6-jobs")
    assert (c.proxy.host, c.proxy.port, c.proxy.namespace, c.proxy.pod_labels, c.proxy.service) == (
        "v6-proxy.v6-node.svc.cluster.local", 8080, "v6-node", {"app": "v6-proxy"}, "v6-proxy")
    assert (c.job.deadline_seconds, c.job.ttl_seconds_after_finished, c.job.backoff_limit,
            c.job.termination_grace_seconds, c.job.run_as_user, c.job.run_as_group) == (3600, 600, 0, 10, 1000, 1000)
    assert c.job.resources.requests == {"cpu": "100m", "memory": "128Mi"}
    assert c.job.unschedulable_grace_seconds == 300
    assert (c.storage.mode, c.storage.claim_name) == ("hostPath", None)
    assert (c.completion.mode, c.completion.poll_interval_seconds, c.completion.watch_timeout_seconds) == (
        "watch", 1.0, 300)
    assert (c.output.keep, c.output.max_bytes, c.limits.max_payload_bytes) == (False, 10485760, 1048576)
    assert (c.health.host, c.health.port) == ("127.0.0.1", 8081)
    assert (c.finishing.workers, c.finishing.queue_size) == (8, 1000)


def test_config_is_frozen():
    c = parse_config(minimal(), {})
    with pytest.raises(AttributeError):
        c.node_id = "other"  # type: ignore[misc]


# --- secrets -----------------------------------------------------------------------------------

def test_api_key_not_in_repr():
    c = parse_config(minimal(), {})
    assert SECRET not in repr(c)
    assert SECRET not in str(c)


def test_env_api_key_wins():
    c = parse_config(minimal(api_key="from-file"), {"NODE_API_KEY": "from-env"})
    assert c.api_key == "from-env"


def test_env_api_key_alone():
    data = minimal()
    del data["api_key"]
    assert parse_config(data, {"NODE_API_KEY": "from-env"}).api_key == "from-env"


def test_api_key_required():
    data = minimal()
    del data["api_key"]
    assert "NODE_API_KEY" in problems(data)["api_key"]
    assert "required" in problems(minimal(api_key=None))["api_key"]
    assert problems(minimal(api_key=""))["api_key"] == "must not be empty"
    assert "string" in problems(minimal(api_key=12345))["api_key"]


def test_secret_not_in_errors_about_it():
    # a key given in the wrong place is named, its value never shown
    p = problems(minimal(server_url=SECRET, proxy={"host": SECRET + " x"}))
    assert set(p) == {"server_url", "proxy.host"}
    assert "<api key>" in p["server_url"]


def test_file_secret_not_in_errors_when_env_wins():
    p = problems(minimal(server_url=SECRET), {"NODE_API_KEY": "other-key"})
    assert "<api key>" in p["server_url"]


def test_yaml_error_does_not_show_the_file(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text(f'api_key: "{SECRET}"\nnode_id: [oops\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "not valid YAML" in str(info.value) and "line" in str(info.value)
    assert SECRET not in str(info.value)


def test_duplicate_yaml_keys(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text("node_id: a\nnode_id: b\n")
    with pytest.raises(ConfigError, match="duplicate key 'node_id'"):
        load_config(path, env={})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "nope.yaml", env={})


def test_not_a_mapping(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping, got a list"):
        load_config(path, env={})


# --- each problem, named -----------------------------------------------------------------------

def test_all_problems_at_once():
    p = problems({"node_id": "Node_A", "server_url": "ftp://x", "task_dir": "relative/dir", "databses": []})
    assert set(p) == {"node_id", "api_key", "server_url", "task_dir", "databses"}
    assert p["databses"] == "unknown key; did you mean 'databases'?"


@pytest.mark.parametrize("over,key,words", [
    ({"node_id": "Node-A"}, "node_id", "not a valid node id"),
    ({"node_id": "-a"}, "node_id", "not a valid node id"),
    ({"node_id": "a" * 43}, "node_id", "not a valid node id"),
    ({"node_id": "a/b"}, "node_id", "not a valid node id"),
    ({"node_id": 7}, "node_id", "must be a string, got an integer"),
    ({"server_url": "127.0.0.1:5000"}, "server_url", "http:// or https://"),
    ({"server_url": "http://"}, "server_url", "with a host"),
    ({"server_url": "http://h:99999"}, "server_url", "not a valid URL"),
    ({"task_dir": "tasks"}, "task_dir", "absolute path"),
    ({"task_dir": "/var/../etc"}, "task_dir", "'..'"),
    ({"databases": {"default": "/x"}}, "databases", "must be a list"),
    ({"databases": ["default"]}, "databases[0]", "must be a mapping"),
    ({"databases": [{"label": "Default", "uri": "/x"}]}, "databases[0].label", "not a valid database label"),
    ({"databases": [{"label": "../etc", "uri": "/x"}]}, "databases[0].label", "not a valid database label"),
    ({"databases": [{"label": "a", "uri": "/x", "typ": "csv"}]}, "databases[0].typ", "did you mean 'type'"),
    ({"databases": [{"label": "a", "uri": "x.csv"}]}, "databases[0].uri", "absolute path"),
    ({"databases": [{"label": "a", "uri": "/x", "type": "sql"}]}, "databases[0].type", "must be one of"),
    ({"databases": [{"uri": "/x"}]}, "databases[0].label", "is required"),
    ({"databases": [{"label": "a"}]}, "databases[0].uri", "is required"),
    ({"databases": [{"label": "a", "uri": "/x"}, {"label": "a", "uri": "/y"}]}, "databases[1].label",
     "duplicate label 'a'"),
    ({"databases": [{"label": "a-b", "uri": "/x"}, {"label": "a_b", "uri": "/y"}]}, "databases[1].label",
     "DATABASE_URI_A_B"),
    ({"kubernetes": {"jobs_namespace": "V6_jobs"}}, "kubernetes.jobs_namespace", "not a valid namespace"),
    ({"kubernetes": {"kubeconfig": ""}}, "kubernetes.kubeconfig", "must not be empty"),
    ({"kubernetes": "in-cluster"}, "kubernetes", "must be a mapping"),
    ({"proxy": {"port": 0}}, "proxy.port", "1..65535"),
    ({"proxy": {"port": "8080"}}, "proxy.port", "must be an integer, got a string"),
    ({"proxy": {"host": "http://proxy"}}, "proxy.host", "not a valid host name"),
    ({"proxy": {"pod_labels": {}}}, "proxy.pod_labels", "non-empty mapping"),
    ({"proxy": {"service": "V6_Proxy"}}, "proxy.service", "not a valid service name"),
    ({"proxy": {"pod_labels": {"app": "a b"}}}, "proxy.pod_labels.app", "not a valid label value"),
    ({"proxy": {"pod_labels": {"-x": "a"}}}, "proxy.pod_labels", "not a valid label key"),
    ({"images": {"allowed": "v6-demo/*"}}, "images.allowed", "must be a list"),
    ({"images": {"allowed": ["ok/*", ""]}}, "images.allowed[1]", "non-empty string"),
    ({"job": {"resources": {"requests": {"cpu": "-1"}}}}, "job.resources.requests.cpu", "not a Kubernetes quantity"),
    ({"job": {"resources": {"limits": {"memory": "lots"}}}}, "job.resources.limits.memory", "not a Kubernetes"),
    ({"job": {"resources": {"limits": {"memory": True}}}}, "job.resources.limits.memory", "got a boolean"),
    ({"job": {"resources": {"requests": {"gpu": 1}}}}, "job.resources.requests.gpu", "unknown key"),
    ({"job": {"resources": {"requests": {"cpu": "2"}}}}, "job.resources.requests.cpu", "more than the limit 1"),
    ({"job": {"max_resources": {"memory": "256Mi"}}}, "job.resources.limits.memory",
     "more than job.max_resources.memory 256Mi"),
    ({"job": {"max_resources": {"gpu": -1}}}, "job.max_resources.gpu", "at least 0"),
    ({"job": {"deadline_seconds": 0}}, "job.deadline_seconds", "at least 1"),
    ({"job": {"deadline_seconds": 1.5}}, "job.deadline_seconds", "must be an integer, got a number"),
    ({"job": {"backoff_limit": True}}, "job.backoff_limit", "must be an integer, got a boolean"),
    ({"job": {"run_as_user": 0}}, "job.run_as_user", "at least 1"),
    ({"job": {"ttl_seconds_after_finished": -1}}, "job.ttl_seconds_after_finished", "at least 0"),
    ({"job": {"gpu_runtime_class_name": "Nvidia!"}}, "job.gpu_runtime_class_name", "runtime class name"),
    ({"job": {"unschedulable_grace_seconds": -1}}, "job.unschedulable_grace_seconds", "at least 0"),
    ({"job": {"unschedulable_grace_seconds": "5m"}}, "job.unschedulable_grace_seconds", "must be a number"),
    ({"job": {"deadline": 5}}, "job.deadline", "did you mean 'deadline_seconds'"),
    ({"storage": {"mode": "pvc"}}, "storage.claim_name", "required when storage.mode is pvc"),
    ({"storage": {"mode": "nfs"}}, "storage.mode", "hostPath, pvc"),
    ({"storage": {"mode": "pvc", "claim_name": "data"}, "databases": [{"label": "a", "uri": "/abs.csv"}]},
     "databases[0].uri", "relative to the claim"),
    ({"storage": {"mode": "pvc", "claim_name": "data"}, "databases": [{"label": "a", "uri": "x/../../y"}]},
     "databases[0].uri", "'..'"),
    ({"completion": {"mode": "push"}}, "completion.mode", "watch, poll"),
    ({"completion": {"poll_interval_seconds": 0}}, "completion.poll_interval_seconds", "greater than 0"),
    ({"completion": {"watch_timeout_seconds": 0}}, "completion.watch_timeout_seconds", "at least 1"),
    ({"finishing": {"workers": -1}}, "finishing.workers", "must be 0..64, got -1"),
    ({"finishing": {"workers": 65}}, "finishing.workers", "must be 0..64"),
    ({"finishing": {"workers": "8"}}, "finishing.workers", "must be an integer"),
    ({"finishing": {"queue_size": 0}}, "finishing.queue_size", "at least 1"),
    ({"finishing": {"worker": 2}}, "finishing.worker", "did you mean 'workers'"),
    ({"output": {"keep": "yes"}}, "output.keep", "true or false"),
    ({"output": {"max_bytes": 0}}, "output.max_bytes", "at least 1"),
    ({"limits": {"max_payload_bytes": -5}}, "limits.max_payload_bytes", "at least 1"),
    ({"health": {"port": 70000}}, "health.port", "0..65535"),
    ({"helth": {}}, "helth", "did you mean 'health'"),
    ({"zzzzzz": 1}, "zzzzzz", "known keys:"),
])
def test_problem_is_named(over, key, words):
    p = problems(minimal(**over))
    assert key in p, p
    assert words in p[key]


def test_unknown_non_string_key():
    data = minimal()
    data[1] = "x"  # type: ignore[index]
    assert "unknown key" in problems(data)["1"]


def test_health_port_zero_allowed():
    assert parse_config(minimal(health={"port": 0}), {}).health.port == 0


def test_quantities_may_be_plain_yaml_numbers():
    c = parse_config(minimal(job={"resources": {"limits": {"cpu": 2, "memory": "1Gi"}},
                                  "max_resources": {"cpu": 2.5}}), {})
    assert c.job.resources.limits == {"cpu": "2", "memory": "1Gi"}
    assert c.job.max_resources.cpu == "2.5"


def test_pvc_mode():
    c = parse_config(minimal(storage={"mode": "pvc", "claim_name": "v6-data"},
                             databases=[{"label": "default", "uri": "data/./employees.csv"}]), {})
    assert (c.storage.mode, c.storage.claim_name) == ("pvc", "v6-data")
    assert c.databases[0].uri == "data/employees.csv"


def test_database_lookup():
    c: NodeConfig = parse_config(minimal(databases=[{"label": "a", "uri": "/a"}, {"label": "b", "uri": "/b"}]), {})
    assert c.database("b").uri == "/b"
    assert c.database("c") is None


# --- quantities --------------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [
    ("100m", Decimal("0.1")), ("1", Decimal(1)), ("0.5", Decimal("0.5")), ("512Mi", Decimal(512 * 2**20)),
    ("1Gi", Decimal(2**30)), ("1e3", Decimal(1000)), ("1E3", Decimal(1000)), ("2k", Decimal(2000)),
    ("1M", Decimal(10**6)), ("1E", Decimal(10**18)), ("3", Decimal(3)), (2, Decimal(2)), (0.25, Decimal("0.25")),
    ("1.5Gi", Decimal(3 * 2**29)), (".5", Decimal("0.5")), ("250u", Decimal("0.00025")),
])
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("bad", ["-1", "-100m", "", "abc", "1 Gi", "1gi", "1KiB", "1e", "1e999", "0x10",
                                 "١", True, None, [1], "1..2", "+1"])
def test_parse_quantity_refuses(bad):
    with pytest.raises(ValueError):
        parse_quantity(bad)


def test_the_server_heartbeat_section():
    from node.config import parse_config
    from node.config_live import ServerHeartbeatConfig
    base = {"node_id": "a", "api_key": "kkkk", "server_url": "http://127.0.0.1:1", "task_dir": "/t"}
    assert parse_config(base, {}).server_heartbeat == ServerHeartbeatConfig(5.0, 3, 6)
    beat = parse_config({**base, "server_heartbeat": {"interval_seconds": 0.5, "suspect_after": 2,
                                                      "fail_after": 4}}, {}).server_heartbeat
    assert (beat.interval_seconds, beat.suspect_after, beat.fail_after) == (0.5, 2, 4)
    with pytest.raises(ConfigError) as e:
        parse_config({**base, "server_heartbeat": {"interval_seconds": 0, "suspect_after": 4,
                                                   "fail_after": 3, "every": 1}}, {})
    assert [k for k, _ in e.value.problems] == ["server_heartbeat.interval_seconds",
                                                "server_heartbeat.every",
                                                "server_heartbeat.fail_after"]
