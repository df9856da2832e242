"""The Job and NetworkPolicy the node makes, field by field (CONTRACTS §5, §6)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from node.config import parse_config
from node.errors import RecoveryError
from node.manifests import (build_job, build_network_policy, job_name, recovery_info, run_labels, run_paths,
                            selector_for_node)
from node.models import TaskCommand, parse_command
from node.proxy_address import ProxyAddress

TASK_DIR = "/var/lib/v6-node/tasks"


def make_config(**over):
    data = {
        "node_id": "node-a", "api_key": "k", "server_url": "http://127.0.0.1:5000", "task_dir": TASK_DIR,
        "databases": [{"label": "default", "uri": "/data/employees.csv", "type": "csv"},
                      {"label": "db-2", "uri": "/data/other.csv", "type": "csv"},
                      {"label": "images", "uri": "/data/images", "type": "folder"}],
        "images": {"allowed": ["v6-demo/*"]},
        # the plain pod shape; the live channel's additions: test_manifests_live.py
        "live": {"enabled": False},
    }
    data.update(over)
    return parse_config(data, {})


def prototype(**over):
    payload = {"run_id": 42, "task_info": {"arg1": "/app/input/csv/default", "arg2": "Age", "arg3": 3},
               "image": "v6-demo/avg", "docker_input": "input1", "tmp_vol_name": "example-tmp-vol",
               "token": "tok", "databases_to_use": ["default"]}
    payload.update(over)
    return payload


def rich(**over):
    payload = {"run_id": 7, "task_id": 5, "parent_id": 3, "image": "v6-demo/avg:1.0", "arguments": ["--x", "1"],
               "input": {"method": "avg"}, "databases": ["db-2", "default"], "token": "tok"}
    payload.update(over)
    return payload


# the proxy Service as the node reads it (node.proxy_service)
PROXY = ProxyAddress(cluster_ip="10.96.0.10", port=8080, target_port=8080)


@pytest.fixture
def config():
    return make_config()


@pytest.fixture
def job(config):
    return build_job(parse_command(prototype(), config), config, PROXY)


def pod_spec(job):
    return job["spec"]["template"]["spec"]


def container(job):
    [c] = pod_spec(job)["containers"]
    return c


def env(job):
    return {e["name"]: e["value"] for e in container(job)["env"]}


def mounts(job):
    return {m["mountPath"]: m for m in container(job)["volumeMounts"]}


def volumes(job):
    return {v["name"]: v for v in pod_spec(job)["volumes"]}


# --- names, labels, selectors ------------------------------------------------------------------

def test_job_name():
    assert job_name("node-a", 42) == "v6-run-42-node-a"
    assert job_name("node-a", 2**53 - 1) == "v6-run-9007199254740991-node-a"
    long_id = "n" * 42  # the longest node id: the name must still fit a label value
    assert len(job_name(long_id, 2**53 - 1)) <= 63
    assert job_name(long_id, 1) != job_name("m" * 42, 1)


@pytest.mark.parametrize("bad", [0, -1, 2**53, True, "42", "../x", 1.0, None])
def test_job_name_refuses_non_ids(bad):
    with pytest.raises(ValueError):
        job_name("node-a", bad)


def test_selector_for_node():
    assert selector_for_node("node-a") == "app.kubernetes.io/managed-by=v6-node,v6.node-id=node-a"


def test_metadata(job):
    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    meta = job["metadata"]
    assert meta["name"] == "v6-run-42-node-a"
    assert meta["namespace"] == "v6-jobs"
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "v6-node", "v6.node-id": "node-a",
                              "v6.run-id": "42", "v6.task-id": "42"}
    assert meta["annotations"] == {"v6.parent-id": "", "v6.image": "v6-demo/avg",
                                   "v6.databases": '["default"]', "v6.shape": "prototype"}


def test_pod_template_labels_are_the_run_labels(config, job):
    cmd = parse_command(prototype(), config)
    assert job["spec"]["template"]["metadata"]["labels"] == run_labels("node-a", cmd)
    # the labels the node selects on are on the pods too
    for part in selector_for_node("node-a").split(","):
        k, v = part.split("=")
        assert job["spec"]["template"]["metadata"]["labels"][k] == v


def test_rich_annotations(config):
    job = build_job(parse_command(rich(), config), config, PROXY)
    assert job["metadata"]["labels"]["v6.run-id"] == "7"
    assert job["metadata"]["labels"]["v6.task-id"] == "5"
    assert job["metadata"]["annotations"] == {"v6.parent-id": "3", "v6.image": "v6-demo/avg:1.0",
                                              "v6.databases": '["db-2", "default"]', "v6.shape": "rich"}


# --- job spec ----------------------------------------------------------------------------------

def test_job_spec(job):
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["completions"] == 1
    assert spec["parallelism"] == 1
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["ttlSecondsAfterFinished"] == 600
    assert set(spec) == {"backoffLimit", "completions", "parallelism", "activeDeadlineSeconds",
                         "ttlSecondsAfterFinished", "template"}


def test_job_spec_from_config():
    config = make_config(job={"backoff_limit": 2, "deadline_seconds": 100, "ttl_seconds_after_finished": 5,
                              "termination_grace_seconds": 3, "run_as_user": 2000, "run_as_group": 3000})
    job = build_job(parse_command(prototype(), config), config, PROXY)
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"],
            job["spec"]["ttlSecondsAfterFinished"]) == (2, 100, 5)
    assert pod_spec(job)["terminationGracePeriodSeconds"] == 3
    sc = pod_spec(job)["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (2000, 3000, 3000)


def test_task_deadline(config):
    job = build_job(parse_command(rich(deadline_seconds=60), config), config, PROXY)
    assert job["spec"]["activeDeadlineSeconds"] == 60


# --- pod security ------------------------------------------------------------------------------

def test_pod_security(job):
    spec = pod_spec(job)
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["terminationGracePeriodSeconds"] == 10
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                       "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
    assert "runtimeClassName" not in spec
    for risky in ("hostNetwork", "hostPID", "hostIPC", "serviceAccountName", "nodeName"):
        assert risky not in spec


def test_container_security(job):
    c = container(job)
    assert c["name"] == "algorithm"
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True, "privileged": False, "capabilities": {"drop": ["ALL"]}}
    assert "command" not in c  # the image's entrypoint runs


def test_container_image_and_args(job):
    c = container(job)
    assert c["image"] == "v6-demo/avg"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["args"] == ["/app/input/csv/default", "Age", "3"]


def test_rich_args(config):
    job = build_job(parse_command(rich(), config), config, PROXY)
    assert container(job)["args"] == ["--x", "1"]


# --- volumes -----------------------------------------------------------------------------------

def test_hostpath_volumes(job):
    run = f"{TASK_DIR}/runs/42"
    assert volumes(job) == {
        "task": {"name": "task", "hostPath": {"path": f"{run}/task", "type": "Directory"}},
        "output": {"name": "output", "hostPath": {"path": f"{run}/output", "type": "Directory"}},
        "tmp": {"name": "tmp", "hostPath": {"path": f"{run}/tmp", "type": "Directory"}},
        "db-0": {"name": "db-0", "hostPath": {"path": "/data/employees.csv", "type": "File"}},
    }


def test_mounts(job):
    assert mounts(job) == {
        "/app/task": {"name": "task", "mountPath": "/app/task", "readOnly": True},
        "/app/output": {"name": "output", "mountPath": "/app/output", "readOnly": False},
        "/app/tmp": {"name": "tmp", "mountPath": "/app/tmp", "readOnly": False},
        "/app/input/csv/default": {"name": "db-0", "mountPath": "/app/input/csv/default", "readOnly": True},
    }


def test_only_requested_databases_are_mounted(config):
    job = build_job(parse_command(rich(databases=["db-2"]), config), config, PROXY)
    assert [v["hostPath"]["path"] for v in pod_spec(job)["volumes"]] == [
        f"{TASK_DIR}/runs/7/task", f"{TASK_DIR}/runs/7/output", f"{TASK_DIR}/runs/7/tmp", "/data/other.csv"]
    assert sorted(mounts(job)) == ["/app/input/csv/db-2", "/app/output", "/app/task", "/app/tmp"]
    assert mounts(job)["/app/input/csv/db-2"]["readOnly"] is True
    assert "DATABASE_URI_DEFAULT" not in env(job)


def test_no_databases(config):
    job = build_job(parse_command(rich(databases=[]), config), config, PROXY)
    assert sorted(volumes(job)) == ["output", "task", "tmp"]
    assert env(job)["DATABASE_LABELS"] == ""
    assert not [k for k in env(job) if k.startswith("DATABASE_URI_")]


def test_folder_database_is_a_directory(config):
    job = build_job(parse_command(rich(databases=["images"]), config), config, PROXY)
    assert volumes(job)["db-0"]["hostPath"] == {"path": "/data/images", "type": "Directory"}


def test_every_volume_is_mounted_and_every_mount_has_a_volume(config):
    job = build_job(parse_command(rich(databases=["db-2", "default", "images"]), config), config, PROXY)
    assert sorted(volumes(job)) == sorted(m["name"] for m in container(job)["volumeMounts"])


def test_pvc_mode():
    config = make_config(storage={"mode": "pvc", "claim_name": "v6-data"},
                         databases=[{"label": "default", "uri": "data/employees.csv"}])
    job = build_job(parse_command(prototype(), config), config, PROXY)
    assert pod_spec(job)["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "v6-data"}}]
    assert container(job)["volumeMounts"] == [
        {"name": "data", "mountPath": "/app/task", "subPath": "runs/42/task", "readOnly": True},
        {"name": "data", "mountPath": "/app/output", "subPath": "runs/42/output", "readOnly": False},
        {"name": "data", "mountPath": "/app/tmp", "subPath": "runs/42/tmp", "readOnly": False},
        {"name": "data", "mountPath": "/app/input/csv/default", "subPath": "data/employees.csv", "readOnly": True},
    ]
    kubernetes_validate.validate(job, "1.30", strict=True)


def test_run_paths(config):
    paths = run_paths(config, 42)
    assert paths.root == f"{TASK_DIR}/runs/42"
    assert (paths.task, paths.output, paths.tmp) == (f"{TASK_DIR}/runs/42/task", f"{TASK_DIR}/runs/42/output",
                                                     f"{TASK_DIR}/runs/42/tmp")
    assert (paths.input_file, paths.token_file, paths.output_file) == (
        f"{TASK_DIR}/runs/42/task/input", f"{TASK_DIR}/runs/42/task/token", f"{TASK_DIR}/runs/42/output/output")
    with pytest.raises(ValueError):
        run_paths(config, -1)


# --- env ---------------------------------------------------------------------------------------

def test_env(config):
    job = build_job(parse_command(rich(), config), config, PROXY)
    assert env(job) == {
        "RUN_ID": "7", "TASK_ID": "5", "NODE_ID": "node-a",
        "INPUT_FILE": "/app/task/input", "TOKEN_FILE": "/app/task/token",
        "OUTPUT_DIR": "/app/output", "OUTPUT_FILE": "/app/output/output", "TMP_DIR": "/app/tmp",
        "DATABASE_LABELS": "db-2,default",
        "DATABASE_URI_DB_2": "/app/input/csv/db-2", "DATABASE_TYPE_DB_2": "csv",
        "DATABASE_URI_DEFAULT": "/app/input/csv/default", "DATABASE_TYPE_DEFAULT": "csv",
        "HOST": "http://v6-proxy.v6-node.svc.cluster.local", "PORT": "8080", "API_PATH": "/api",
    }
    # each env var once, every value a string (the API refuses numbers)
    names = [e["name"] for e in container(job)["env"]]
    assert len(names) == len(set(names))
    assert all(isinstance(e["value"], str) for e in container(job)["env"])


def test_env_uri_points_at_the_mount(config):
    job = build_job(parse_command(rich(), config), config, PROXY)
    for label in ("db-2", "default"):
        key = "DATABASE_URI_" + label.upper().replace("-", "_")
        assert env(job)[key] in mounts(job)


def test_env_proxy_from_config():
    config = make_config(proxy={"host": "127.0.0.1", "port": 18080})
    job = build_job(parse_command(prototype(), config), config, PROXY)
    assert (env(job)["HOST"], env(job)["PORT"]) == ("http://127.0.0.1", "18080")


def test_token_is_not_in_the_job(config):
    job = build_job(parse_command(prototype(token="s3cr3t-token-value"), config), config, PROXY)
    assert "s3cr3t-token-value" not in json.dumps(job)


# --- resources ---------------------------------------------------------------------------------

def test_default_resources(job):
    assert container(job)["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                           "limits": {"cpu": "1", "memory": "512Mi"}}


def test_task_resources_raise_the_limits(config):
    job = build_job(parse_command(rich(resources={"cpu": "2", "memory": "64Mi"}), config), config, PROXY)
    # limits as asked; a request above the new limit comes down to it
    assert container(job)["resources"] == {"requests": {"cpu": "100m", "memory": "64Mi"},
                                           "limits": {"cpu": "2", "memory": "64Mi"}}


def test_gpu(config):
    job = build_job(parse_command(rich(resources={"gpu": 1}), config), config, PROXY)
    assert container(job)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in container(job)["resources"]["requests"]
    assert "runtimeClassName" not in pod_spec(job)


def test_no_gpu_key_without_a_gpu(config):
    job = build_job(parse_command(rich(resources={"gpu": 0}), config), config, PROXY)
    assert "nvidia.com/gpu" not in container(job)["resources"]["limits"]


def test_runtime_classes():
    config = make_config(job={"runtime_class_name": "gvisor", "gpu_runtime_class_name": "nvidia"})
    plain = build_job(parse_command(rich(), config), config, PROXY)
    gpu = build_job(parse_command(rich(resources={"gpu": 1}), config), config, PROXY)
    assert pod_spec(plain)["runtimeClassName"] == "gvisor"
    assert pod_spec(gpu)["runtimeClassName"] == "nvidia"
    only_gpu = make_config(job={"gpu_runtime_class_name": "nvidia"})
    assert "runtimeClassName" not in pod_spec(build_job(parse_command(rich(), only_gpu), only_gpu, PROXY))
    assert pod_spec(build_job(parse_command(rich(resources={"gpu": 1}), only_gpu), only_gpu, PROXY))[
        "runtimeClassName"] == "nvidia"


# --- schema ------------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [prototype(), rich(), rich(resources={"cpu": "2", "gpu": 1}, databases=[]),
                                     rich(databases=["db-2", "default", "images"])])
def test_job_is_valid_kubernetes_1_30(config, payload):
    job = build_job(parse_command(payload, config), config, PROXY)
    kubernetes_validate.validate(job, "1.30", strict=True)


def test_schema_check_is_strict(job):
    job = copy.deepcopy(job)
    container(job)["securityContext"]["readOnlyRootFileSystem"] = True   # wrong case
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, "1.30", strict=True)


def test_build_job_is_pure(config):
    cmd = parse_command(rich(), config)
    first = build_job(cmd, config, PROXY)
    container(first)["env"].clear()
    first["metadata"]["labels"]["x"] = "y"
    assert build_job(cmd, config, PROXY) != first
    assert build_job(cmd, config, PROXY) == build_job(cmd, config, PROXY)


# --- network policy ----------------------------------------------------------------------------

def test_network_policy(config):
    pol = build_network_policy(config, PROXY)
    kubernetes_validate.validate(pol, "1.30", strict=True)
    assert (pol["apiVersion"], pol["kind"]) == ("networking.k8s.io/v1", "NetworkPolicy")
    assert pol["metadata"]["namespace"] == "v6-jobs"
    spec = pol["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "v6-node",
                                                   "v6.node-id": "node-a"}}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == []
    [proxy] = spec["egress"]  # nothing else: no DNS (issue 13)
    assert proxy == {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "v6-node"}},
                             "podSelector": {"matchLabels": {"app": "v6-proxy"}}}],
                     "ports": [{"protocol": "TCP", "port": 8080}]}


def test_network_policy_selects_the_jobs_pods(config, job):
    selector = build_network_policy(config, PROXY)["spec"]["podSelector"]["matchLabels"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in selector.items())


def test_network_policy_proxy_from_config():
    config = make_config(proxy={"port": 9000, "namespace": "edge", "pod_labels": {"app.kubernetes.io/name": "px"}})
    [proxy] = build_network_policy(config, ProxyAddress("10.0.0.9", 9000, 9000))["spec"]["egress"]
    assert proxy["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "edge"}
    assert proxy["to"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "px"}
    assert proxy["ports"] == [{"protocol": "TCP", "port": 9000}]


def test_a_service_port_other_than_its_target_port():
    """Pods connect to the Service's port (env PORT); the policy allows the proxy pods' port."""
    config = make_config(proxy={"port": 80})
    address = ProxyAddress(cluster_ip="10.96.3.4", port=80, target_port=8080)
    [proxy] = build_network_policy(config, address)["spec"]["egress"]
    assert proxy["ports"] == [{"protocol": "TCP", "port": 8080}]
    env = {e["name"]: e["value"] for e in container(build_job(parse_command(rich(), config), config, address))["env"]}
    assert (env["HOST"], env["PORT"]) == ("http://v6-proxy.v6-node.svc.cluster.local", "80")


# --- no DNS: the proxy by address --------------------------------------------------------------

def test_the_pod_has_no_dns_and_finds_the_proxy_by_its_service_address(config, job):
    spec = pod_spec(job)
    assert spec["dnsPolicy"] == "None"
    # a nameserver in the pod's own network namespace, where nothing listens
    assert spec["dnsConfig"]["nameservers"] == ["127.0.0.1"]
    assert spec["dnsConfig"]["searches"] == []
    assert spec["hostAliases"] == [{"ip": "10.96.0.10", "hostnames": ["v6-proxy.v6-node.svc.cluster.local"]}]
    kubernetes_validate.validate(job, "1.30", strict=True)


def test_a_proxy_given_by_address_needs_no_host_alias():
    config = make_config(proxy={"host": "10.1.2.3"})
    spec = pod_spec(build_job(parse_command(rich(), config), config, ProxyAddress("10.1.2.3", 8080, 8080)))
    assert spec["dnsPolicy"] == "None" and "hostAliases" not in spec


def test_the_host_alias_follows_the_service_address(config):
    cmd = parse_command(rich(), config)
    moved = build_job(cmd, config, ProxyAddress("10.96.7.7", 8080, 8080))
    assert pod_spec(moved)["hostAliases"][0]["ip"] == "10.96.7.7"
    assert pod_spec(build_job(cmd, config, PROXY))["dnsConfig"] is not pod_spec(moved)["dnsConfig"]


# --- recovery ----------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [prototype(), rich(), rich(parent_id=None, databases=[])])
def test_recovery_round_trip(config, payload):
    cmd: TaskCommand = parse_command(payload, config)
    ref = recovery_info(build_job(cmd, config, PROXY))
    assert (ref.node_id, ref.run_id, ref.task_id, ref.parent_id, ref.image, ref.databases, ref.shape,
            ref.job_name) == ("node-a", cmd.run_id, cmd.task_id, cmd.parent_id, cmd.image, cmd.databases,
                              cmd.shape, f"v6-run-{cmd.run_id}-node-a")


def test_recovery_from_a_job_read_back_from_the_api():
    job = yaml.safe_load((Path(__file__).parent / "fixtures" / "job-active.yaml").read_text())
    ref = recovery_info(job)
    assert (ref.run_id, ref.task_id, ref.parent_id, ref.image, ref.databases) == (
        42, 42, None, "v6-demo/avg:latest", ("default",))


@pytest.mark.parametrize("edit", [
    lambda j: j["metadata"]["labels"].pop("v6.run-id"),
    lambda j: j["metadata"]["labels"].__setitem__("v6.run-id", "0"),
    lambda j: j["metadata"]["labels"].__setitem__("v6.task-id", "x"),
    lambda j: j["metadata"]["labels"].__setitem__("app.kubernetes.io/managed-by", "helm"),
    lambda j: j["metadata"]["annotations"].__setitem__("v6.databases", "{"),
    lambda j: j["metadata"]["annotations"].__setitem__("v6.databases", '{"a": 1}'),
    lambda j: j["metadata"]["annotations"].__setitem__("v6.parent-id", "-3"),
    lambda j: j["metadata"]["annotations"].pop("v6.image"),
    lambda j: j["metadata"]["annotations"].__setitem__("v6.shape", "other"),
    lambda j: j.pop("metadata"),
])
def test_recovery_refuses_incomplete_jobs(job, edit):
    edit(job)
    with pytest.raises(RecoveryError):
        recovery_info(job)
