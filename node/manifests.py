"""Kubernetes objects the node makes (CONTRACTS §5, §6): pure functions, no I/O.

Volume choices:
- hostPath volumes for a run's directories use type ``Directory``, not ``DirectoryOrCreate``: the
  node creates ``runs/<run_id>/{task,output,tmp}`` with the right owner before it creates the Job,
  whereas a kubelet would create a missing one owned by root (unwritable for the non-root
  algorithm) and hide the node's mistake. A missing directory fails the pod at once (FailedMount →
  ``start failed``).
- Database files use ``File`` (``Directory`` for type ``folder``), so a wrong uri fails the same way
  instead of mounting an empty directory at the file's place.
- In pvc mode one ``persistentVolumeClaim`` volume is mounted several times with a ``subPath`` per
  mount (``runs/<run_id>/task`` …, and each database's uri inside the claim).
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import posixpath
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from node.companion import add_service
from node.config import FILE_DATABASE_TYPES, NodeConfig, env_suffix
from node.errors import RecoveryError
from node.isolation_probe import join_address
from node.models import MAX_ID, TaskCommand
from node.proxy_address import ProxyAddress

MANAGED_BY_KEY = "app.kubernetes.io/managed-by"
MANAGED_BY = "v6-node"
NODE_ID_LABEL = "v6.node-id"
RUN_ID_LABEL = "v6.run-id"
TASK_ID_LABEL = "v6.task-id"
PARENT_ID_ANNOTATION = "v6.parent-id"
IMAGE_ANNOTATION = "v6.image"
DATABASES_ANNOTATION = "v6.databases"
SHAPE_ANNOTATION = "v6.shape"
CONTAINER_NAME = "algorithm"

# Paths inside the pod (CONTRACTS §5).
INPUT_CSV_DIR = "/app/input/csv"
TASK_MOUNT = "/app/task"
OUTPUT_MOUNT = "/app/output"
TMP_MOUNT = "/app/tmp"
API_PATH = "/api"
# The live channel (CONTRACTS §9): an emptyDir shared by the algorithm and its sidecar.
LIVE_MOUNT = "/app/live"
PROGRESS_FILE = f"{LIVE_MOUNT}/progress"
SIDECAR_NAME = "live"
SIDECAR_ARGS = ["sidecar"]  # the node image's entrypoint is `python -m node`
SIDECAR_RESOURCES = {"requests": {"cpu": "10m", "memory": "32Mi"},
                     "limits": {"cpu": "200m", "memory": "96Mi"}}
LIVE_VOLUME_LIMIT = "16Mi"

GPU_RESOURCE = "nvidia.com/gpu"

# Algorithm pods have no DNS (a resolver forwards any name upstream: data could leave in the
# queries). The one nameserver is the pod's own loopback, where nothing listens: a lookup fails
# at once instead of timing out, and never leaves the pod's network namespace. The proxy's name
# comes from hostAliases (/etc/hosts) instead.
NO_DNS_CONFIG: dict[str, Any] = {"nameservers": ["127.0.0.1"], "searches": [],
                                 "options": [{"name": "ndots", "value": "1"},
                                             {"name": "attempts", "value": "1"},
                                             {"name": "timeout", "value": "1"}]}


def check_run_id(run_id: int) -> int:
    if isinstance(run_id, bool) or not isinstance(run_id, int) or not 0 < run_id < MAX_ID:
        raise ValueError(f"not a run id: {run_id!r}")
    return run_id


def job_name(node_id: str, run_id: int) -> str:
    """The Job's name for a run of this node: `v6-run-<run id>-<node id>`.

    The node id is part of it because nodes may share a jobs namespace and the prototype's
    payload gives every target node the same run id. A Job's name must fit a label value
    (63 characters); a node id too long for that is replaced by a digest of it.
    """
    name = f"v6-run-{check_run_id(run_id)}-{node_id}"
    if len(name) > 63:
        name = f"v6-run-{run_id}-{hashlib.sha256(node_id.encode()).hexdigest()[:12]}"
    return name


def node_labels(node_id: str) -> dict[str, str]:
    return {MANAGED_BY_KEY: MANAGED_BY, NODE_ID_LABEL: node_id}


def run_labels(node_id: str, cmd: TaskCommand) -> dict[str, str]:
    return {**node_labels(node_id), RUN_ID_LABEL: str(cmd.run_id), TASK_ID_LABEL: str(cmd.task_id)}


def selector_for_node(node_id: str) -> str:
    """Label selector for everything this node made (and nothing another node made)."""
    return f"{MANAGED_BY_KEY}={MANAGED_BY},{NODE_ID_LABEL}={node_id}"


@dataclass(frozen=True)
class RunPaths:
    """Host (or node-side) paths of one run's directories under ``<task_dir>/runs/<run_id>``."""
    root: str
    task: str
    output: str
    tmp: str

    @property
    def input_file(self) -> str:
        return posixpath.join(self.task, "input")

    @property
    def token_file(self) -> str:
        return posixpath.join(self.task, "token")

    @property
    def output_file(self) -> str:
        return posixpath.join(self.output, "output")


def run_subdir(run_id: int) -> str:
    """The run's directory relative to task_dir (and to the claim's root in pvc mode)."""
    return f"runs/{check_run_id(run_id)}"


def run_paths(config: NodeConfig, run_id: int) -> RunPaths:
    root = posixpath.join(config.task_dir, run_subdir(run_id))
    return RunPaths(root=root, task=posixpath.join(root, "task"), output=posixpath.join(root, "output"),
                    tmp=posixpath.join(root, "tmp"))


def _env(cmd: TaskCommand, config: NodeConfig) -> list[dict[str, str]]:
    env = {
        "RUN_ID": str(cmd.run_id),
        "TASK_ID": str(cmd.task_id),
        "NODE_ID": config.node_id,
        "INPUT_FILE": f"{TASK_MOUNT}/input",
        "TOKEN_FILE": f"{TASK_MOUNT}/token",
        "OUTPUT_DIR": OUTPUT_MOUNT,
        "OUTPUT_FILE": f"{OUTPUT_MOUNT}/output",
        "TMP_DIR": TMP_MOUNT,
        "DATABASE_LABELS": ",".join(cmd.databases),
    }
    for label in cmd.databases:
        db = config.database(label)
        if db is None:
            raise ValueError(f"database {label!r} is not configured")
        env[f"DATABASE_URI_{env_suffix(label)}"] = f"{INPUT_CSV_DIR}/{label}"
        env[f"DATABASE_TYPE_{env_suffix(label)}"] = db.type
    env.update({"HOST": f"http://{config.proxy.host}", "PORT": str(config.proxy.port), "API_PATH": API_PATH})
    return [{"name": k, "value": v} for k, v in env.items()]


def _volumes(cmd: TaskCommand, config: NodeConfig) -> tuple[list[dict], list[dict]]:
    """(volumes, volumeMounts) for the run: its own directories and only the requested databases."""
    sub = run_subdir(cmd.run_id)
    mounts = [
        {"name": "task", "mountPath": TASK_MOUNT, "readOnly": True, "sub": f"{sub}/task"},
        {"name": "output", "mountPath": OUTPUT_MOUNT, "readOnly": False, "sub": f"{sub}/output"},
        {"name": "tmp", "mountPath": TMP_MOUNT, "readOnly": False, "sub": f"{sub}/tmp"},
    ]
    dbs = []
    for i, label in enumerate(cmd.databases):
        db = config.database(label)
        if db is None:
            raise ValueError(f"database {label!r} is not configured")
        dbs.append((f"db-{i}", db))
        mounts.append({"name": f"db-{i}", "mountPath": f"{INPUT_CSV_DIR}/{label}", "readOnly": True,
                       "sub": db.uri})
    if config.storage.mode == "pvc":
        volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": config.storage.claim_name}}]
        volume_mounts = [{"name": "data", "mountPath": m["mountPath"], "subPath": m["sub"], "readOnly": m["readOnly"]}
                         for m in mounts]
        return volumes, volume_mounts
    paths = run_paths(config, cmd.run_id)
    volumes = [
        {"name": "task", "hostPath": {"path": paths.task, "type": "Directory"}},
        {"name": "output", "hostPath": {"path": paths.output, "type": "Directory"}},
        {"name": "tmp", "hostPath": {"path": paths.tmp, "type": "Directory"}},
    ]
    for name, db in dbs:
        kind = "File" if db.type in FILE_DATABASE_TYPES else "Directory"
        volumes.append({"name": name, "hostPath": {"path": db.uri, "type": kind}})
    volume_mounts = [{"name": m["name"], "mountPath": m["mountPath"], "readOnly": m["readOnly"]} for m in mounts]
    return volumes, volume_mounts


def _resources(cmd: TaskCommand) -> dict[str, dict[str, str]]:
    requests = dict(cmd.resources.requests)
    limits = dict(cmd.resources.limits)
    if cmd.resources.gpu > 0:
        # Extended resources may only be given as limits (requests default to them).
        limits[GPU_RESOURCE] = str(cmd.resources.gpu)
    return {"requests": requests, "limits": limits}


def run_annotations(cmd: TaskCommand) -> dict[str, str]:
    """What recovery needs beyond the labels, to pick the run up again after a restart."""
    return {
        PARENT_ID_ANNOTATION: "" if cmd.parent_id is None else str(cmd.parent_id),
        IMAGE_ANNOTATION: cmd.image,
        DATABASES_ANNOTATION: json.dumps(list(cmd.databases)),
        SHAPE_ANNOTATION: cmd.shape,
    }


def _restricted() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }


def probe_env(config: NodeConfig) -> list[dict[str, str]]:
    """The isolation probe's settings (`node.isolation_probe`): the proxy by the name the
    algorithm uses, and what the pod must not reach: the server directly (only the proxy may)
    and the operator's list; the sidecar adds the API server (KUBERNETES_SERVICE_HOST)."""
    if not config.live.isolation_probe:
        return [{"name": "PROBE_ISOLATION", "value": "0"}]
    server = urlsplit(config.server_url)
    port = server.port or (443 if server.scheme == "https" else 80)
    host = server.hostname or ""
    # a server on loopback is the node's own: in the pod, loopback is the pod itself
    blocked = [] if _is_loopback(host) else [join_address(host, port)]
    blocked += config.live.probe_blocked
    return [{"name": "PROBE_ISOLATION", "value": "1"},
            {"name": "PROXY_HOST", "value": config.proxy.host},
            {"name": "PROXY_PORT", "value": str(config.proxy.port)},
            {"name": "PROBE_BLOCKED", "value": ",".join(dict.fromkeys(blocked))}]


def build_sidecar(cmd: TaskCommand, config: NodeConfig) -> dict[str, Any]:
    """The live-channel sidecar: a native sidecar (init container, restartPolicy Always), so it
    starts before the algorithm and is stopped after it, without holding the Job open."""
    live = config.live
    env = [
        {"name": "RUN_ID", "value": str(cmd.run_id)},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "LIVE_PUB_PORT", "value": str(live.pub_port)},
        {"name": "LIVE_REP_PORT", "value": str(live.rep_port)},
        {"name": "LIVE_HEARTBEAT_SECONDS", "value": f"{live.heartbeat_seconds:g}"},
        {"name": "PROGRESS_FILE", "value": PROGRESS_FILE},
        *probe_env(config),
    ]
    return {
        "name": SIDECAR_NAME,
        "image": live.sidecar_image,
        "imagePullPolicy": "IfNotPresent",
        "restartPolicy": "Always",
        "args": list(SIDECAR_ARGS),
        "env": env,
        "ports": [{"name": "live-pub", "containerPort": live.pub_port, "protocol": "TCP"},
                  {"name": "live-rep", "containerPort": live.rep_port, "protocol": "TCP"}],
        "volumeMounts": [{"name": SIDECAR_NAME, "mountPath": LIVE_MOUNT, "readOnly": True}],
        # the algorithm starts only once the sidecar listens: progress written before that
        # would be lost with a fast algorithm (a sidecar without a startup probe counts as
        # started as soon as its process runs)
        "startupProbe": {"tcpSocket": {"port": "live-rep"}, "periodSeconds": 1,
                         "failureThreshold": 30},
        "resources": {k: dict(v) for k, v in SIDECAR_RESOURCES.items()},
        "securityContext": _restricted(),
    }


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def build_job(cmd: TaskCommand, config: NodeConfig, proxy: ProxyAddress) -> dict[str, Any]:
    """The ``batch/v1`` Job running one task (a plain dict in the API's JSON shape).

    ``proxy`` is the proxy Service as read from the cluster: the pod gets no DNS and finds the
    proxy's name (``proxy.host``) at the Service's ClusterIP through ``hostAliases``.
    """
    job = config.job
    labels = run_labels(config.node_id, cmd)
    volumes, volume_mounts = _volumes(cmd, config)
    container = {
        "name": CONTAINER_NAME,
        "image": cmd.image,
        "imagePullPolicy": "IfNotPresent",
        "args": list(cmd.arguments),
        "env": _env(cmd, config),
        "volumeMounts": volume_mounts,
        "resources": _resources(cmd),
        "securityContext": _restricted(),
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": job.termination_grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": job.run_as_user,
            "runAsGroup": job.run_as_group,
            "fsGroup": job.run_as_group,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
        "dnsPolicy": "None",
        "dnsConfig": json.loads(json.dumps(NO_DNS_CONFIG)),
    }
    if not _is_ip(config.proxy.host):  # an address needs no name
        pod_spec["hostAliases"] = [{"ip": proxy.cluster_ip, "hostnames": [config.proxy.host]}]
    if config.live.enabled:
        container["env"].append({"name": "PROGRESS_FILE", "value": PROGRESS_FILE})
        container["volumeMounts"].append({"name": SIDECAR_NAME, "mountPath": LIVE_MOUNT,
                                          "readOnly": False})
        pod_spec["volumes"].append({"name": SIDECAR_NAME,
                                    "emptyDir": {"sizeLimit": LIVE_VOLUME_LIMIT}})
        pod_spec["initContainers"] = [build_sidecar(cmd, config)]
    runtime_class = job.runtime_class_name
    if cmd.resources.gpu > 0 and job.gpu_runtime_class_name:
        runtime_class = job.gpu_runtime_class_name
    if runtime_class:
        pod_spec["runtimeClassName"] = runtime_class
    template: dict[str, Any] = {"metadata": {"labels": dict(labels)}, "spec": pod_spec}
    add_service(template, cmd, config, _restricted(), INPUT_CSV_DIR)  # CONTRACTS §10, if any
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(config.node_id, cmd.run_id),
            "namespace": config.kubernetes.jobs_namespace,
            "labels": labels,
            "annotations": run_annotations(cmd),
        },
        "spec": {
            "backoffLimit": job.backoff_limit,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": cmd.deadline_seconds,
            "ttlSecondsAfterFinished": job.ttl_seconds_after_finished,
            "template": template,
        },
    }


def network_policy_name(node_id: str) -> str:
    return f"v6-node-{node_id}-algorithms"


def live_peer_labels(config: NodeConfig) -> dict[str, str]:
    """The labels of the pods that may reach this node's sidecars: this node's own pod only
    (``live.node_pod_labels`` plus the node-id label; the node's Deployment carries both)."""
    return {**config.live.node_pod_labels, NODE_ID_LABEL: config.node_id}


def build_network_policy(config: NodeConfig, address: ProxyAddress) -> dict[str, Any]:
    """Isolation of this node's algorithm pods: egress only to the proxy's pods, on the port they
    listen on (the Service's targetPort; pods connect to the ClusterIP and kube-proxy's DNAT
    happens before the policy sees the packet on most CNIs, see README); no DNS; no ingress,
    except, with the live channel, from this node's own pod to the sidecar's two ports."""
    proxy = config.proxy
    ingress: list[dict[str, Any]] = []
    if config.live.enabled:
        # the node connects to the sidecars' sockets; nothing else may reach the pods, not even
        # another node's pod in the same namespace
        live = config.live
        ingress.append({
            "from": [{
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": live.node_namespace}},
                "podSelector": {"matchLabels": live_peer_labels(config)},
            }],
            "ports": [{"protocol": "TCP", "port": live.pub_port},
                      {"protocol": "TCP", "port": live.rep_port}],
        })
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": network_policy_name(config.node_id),
            "namespace": config.kubernetes.jobs_namespace,
            "labels": node_labels(config.node_id),
        },
        "spec": {
            "podSelector": {"matchLabels": node_labels(config.node_id)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": [
                {
                    "to": [{
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": proxy.namespace}},
                        "podSelector": {"matchLabels": dict(proxy.pod_labels)},
                    }],
                    "ports": [{"protocol": "TCP", "port": address.target_port}],
                },
            ],
        },
    }


@dataclass(frozen=True)
class RunRef:
    """A run as recorded on its Job, enough to follow it again after a node restart."""
    node_id: str
    run_id: int
    task_id: int
    parent_id: int | None
    image: str
    databases: tuple[str, ...]
    shape: str
    job_name: str


def _id(text: object, what: str) -> int:
    if not isinstance(text, str) or not text.isdigit() or not text.isascii():
        raise RecoveryError(f"{what} is not an id: {str(text)[:40]!r}")
    value = int(text)
    if not 0 < value < MAX_ID:
        raise RecoveryError(f"{what} is out of range: {value}")
    return value


def recovery_info(job: dict[str, Any]) -> RunRef:
    """The RunRef recorded on a Job made by ``build_job``; raises RecoveryError if it lacks any."""
    meta = job.get("metadata") if isinstance(job, dict) else None
    if not isinstance(meta, dict):
        raise RecoveryError("object has no metadata")
    labels = meta.get("labels") or {}
    notes = meta.get("annotations") or {}
    name = meta.get("name", "?")
    if labels.get(MANAGED_BY_KEY) != MANAGED_BY or not labels.get(NODE_ID_LABEL):
        raise RecoveryError(f"job {name}: not made by a v6 node")
    run_id = _id(labels.get(RUN_ID_LABEL), f"job {name}: label {RUN_ID_LABEL}")
    task_id = _id(labels.get(TASK_ID_LABEL), f"job {name}: label {TASK_ID_LABEL}")
    parent = notes.get(PARENT_ID_ANNOTATION, "")
    parent_id = None if parent == "" else _id(parent, f"job {name}: annotation {PARENT_ID_ANNOTATION}")
    image = notes.get(IMAGE_ANNOTATION)
    if not isinstance(image, str) or not image:
        raise RecoveryError(f"job {name}: annotation {IMAGE_ANNOTATION} is missing")
    try:
        databases = json.loads(notes.get(DATABASES_ANNOTATION, ""))
    except ValueError as e:
        raise RecoveryError(f"job {name}: annotation {DATABASES_ANNOTATION} is not JSON") from e
    if not isinstance(databases, list) or not all(isinstance(d, str) for d in databases):
        raise RecoveryError(f"job {name}: annotation {DATABASES_ANNOTATION} is not a list of labels")
    shape = notes.get(SHAPE_ANNOTATION, "rich")
    if shape not in ("prototype", "rich"):
        raise RecoveryError(f"job {name}: annotation {SHAPE_ANNOTATION} is {str(shape)[:20]!r}")
    return RunRef(node_id=labels[NODE_ID_LABEL], run_id=run_id, task_id=task_id, parent_id=parent_id,
                  image=image, databases=tuple(databases), shape=shape, job_name=str(name))
