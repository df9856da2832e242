"""The live channel's additions to the Job and the NetworkPolicy (node/manifests.py)."""
from __future__ import annotations

import kubernetes_validate

from node.manifests import build_job, build_network_policy
from node.models import parse_command
from tests.node.test_manifests import PROXY, make_config, prototype, rich

LIVE = {"enabled": True, "pub_port": 6001, "rep_port": 6002, "heartbeat_seconds": 0.5,
        "node_namespace": "v6-node", "node_pod_labels": {"app": "v6-node"}}


def _job(payload=None, **live):
    config = make_config(live={**LIVE, **live})
    return build_job(parse_command(payload or prototype(), config), config, PROXY), config


def test_the_live_channel_is_on_by_default():
    config = make_config(live={})
    assert config.live.enabled
    spec = build_job(parse_command(prototype(), config), config, PROXY)["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["live"]


def test_without_the_live_channel_the_pod_has_no_sidecar():
    config = make_config(live={"enabled": False})
    job = build_job(parse_command(prototype(), config), config, PROXY)
    spec = job["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    assert all(v["name"] != "live" for v in spec["volumes"])
    assert all(e["name"] != "PROGRESS_FILE" for e in spec["containers"][0]["env"])
    assert build_network_policy(config, PROXY)["spec"]["ingress"] == []


def test_the_sidecar_is_a_native_sidecar_sharing_an_empty_dir_with_the_algorithm():
    job, _ = _job(rich())
    spec = job["spec"]["template"]["spec"]
    [side] = spec["initContainers"]
    algo = spec["containers"][0]
    assert side["name"] == "live" and side["restartPolicy"] == "Always"
    assert side["image"] == "v6-demo/node" and side["args"] == ["sidecar"]
    assert "command" not in side  # the image's entrypoint (python -m node) runs it
    env = {e["name"]: e for e in side["env"]}
    assert env["POD_IP"] == {"name": "POD_IP",
                             "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    assert {k: env[k]["value"] for k in ("RUN_ID", "LIVE_PUB_PORT", "LIVE_REP_PORT",
                                         "LIVE_HEARTBEAT_SECONDS", "PROGRESS_FILE")} == \
        {"RUN_ID": "7", "LIVE_PUB_PORT": "6001", "LIVE_REP_PORT": "6002",
         "LIVE_HEARTBEAT_SECONDS": "0.5", "PROGRESS_FILE": "/app/live/progress"}
    assert side["volumeMounts"] == [{"name": "live", "mountPath": "/app/live", "readOnly": True}]
    assert {"name": "live", "mountPath": "/app/live", "readOnly": False} in algo["volumeMounts"]
    assert {"name": "PROGRESS_FILE", "value": "/app/live/progress"} in algo["env"]
    assert {"name": "live", "emptyDir": {"sizeLimit": "16Mi"}} in spec["volumes"]
    # no secrets for the sidecar: the container token stays in the algorithm's task mount
    assert "TOKEN_FILE" not in env and all(m["mountPath"] != "/app/task"
                                           for m in side["volumeMounts"])
    assert side["securityContext"] == algo["securityContext"]
    assert side["securityContext"]["readOnlyRootFilesystem"] is True
    assert side["resources"]["limits"] == {"cpu": "200m", "memory": "96Mi"}
    # the algorithm waits until the sidecar listens on its REP port (the probe names it)
    assert side["startupProbe"]["tcpSocket"] == {"port": "live-rep"}
    assert {"name": "live-rep", "containerPort": 6002, "protocol": "TCP"} in side["ports"]
    kubernetes_validate.validate(job, "1.30", strict=True)


def test_the_network_policy_lets_only_the_node_reach_the_sidecar_ports():
    _, config = _job()
    policy = build_network_policy(config, PROXY)
    assert policy["spec"]["ingress"] == [{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "v6-node"}},
                  # this node's own pod, not every node's (issue 13)
                  "podSelector": {"matchLabels": {"app": "v6-node", "v6.node-id": "node-a"}}}],
        "ports": [{"protocol": "TCP", "port": 6001}, {"protocol": "TCP", "port": 6002}]}]
    kubernetes_validate.validate(policy, "1.30", strict=True)


def _probe_env(**over):
    config = make_config(live={**LIVE, **over.pop("live", {})}, **over)
    spec = build_job(parse_command(prototype(), config), config, PROXY)["spec"]["template"]["spec"]
    return {e["name"]: e.get("value") for e in spec["initContainers"][0]["env"]}, config


def test_the_sidecar_probes_the_proxy_by_the_algorithms_name_and_the_server_as_blocked():
    env, config = _probe_env(server_url="https://v6-server.v6-server.svc:8443/api",
                             live={"probe_blocked": ["10.1.2.3:5432", "[fd00::1]:443"]})
    assert env["PROBE_ISOLATION"] == "1"
    # the same name and port the algorithm is given (HOST, PORT), found through hostAliases
    assert (env["PROXY_HOST"], env["PROXY_PORT"]) == (config.proxy.host, str(config.proxy.port))
    assert env["PROBE_BLOCKED"] == "v6-server.v6-server.svc:8443,10.1.2.3:5432,[fd00::1]:443"
    env, _ = _probe_env(server_url="https://server.example")
    assert env["PROBE_BLOCKED"] == "server.example:443"  # the scheme's port when none is given


def test_a_server_on_loopback_is_not_probed_from_the_pod():
    # in the pod, 127.0.0.1 is the pod itself: "refused" there would prove nothing
    env, _ = _probe_env(server_url="http://127.0.0.1:5000")
    assert env["PROBE_BLOCKED"] == ""
    env, _ = _probe_env(server_url="http://localhost:5000", live={"probe_blocked": ["10.0.0.1:1"]})
    assert env["PROBE_BLOCKED"] == "10.0.0.1:1"


def test_the_probe_can_be_turned_off():
    env, _ = _probe_env(live={"isolation_probe": False})
    assert env["PROBE_ISOLATION"] == "0"
    assert not {"PROXY_HOST", "PROXY_PORT", "PROBE_BLOCKED"} & set(env)


def test_bad_probe_addresses_are_refused_with_the_entry_named():
    import pytest

    from node.errors import ConfigError
    with pytest.raises(ConfigError) as e:
        make_config(live={"probe_blocked": ["10.0.0.1", "fd00::1:80", "h:99999", 5, "a,b:1",
                                            "ok.example:80"]})
    keys = [k for k, _ in e.value.problems]
    assert keys == [f"live.probe_blocked[{i}]" for i in range(5)], e.value.problems
    with pytest.raises(ConfigError, match="at most 12"):
        make_config(live={"probe_blocked": [f"10.0.0.{i}:80" for i in range(13)]})
