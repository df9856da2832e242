"""Node configuration: typed, frozen settings loaded once from YAML (CONTRACTS §8).

``load_config`` reads the file, ``parse_config`` validates a mapping. Every problem is collected and
reported together in one ``ConfigError`` (one line per problem, naming the key), because a user
fixing a configuration file wants to see all problems at once. The API key may come from the
``NODE_API_KEY`` environment variable instead of the file (the variable wins); it never appears
in a ``repr`` or in an error message.
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from typing import Mapping

import yaml

from node.config_read import (DNS_LABEL_RE, DNS_SUBDOMAIN_RE, LABEL_KEY_RE, LABEL_RE, LABEL_VALUE_RE, NODE_ID_RE,
                              RESOURCE_NAMES, StrictLoader, absolute_path, at_least, get_quantity, HOST_RE,
                              HOST_RULE, matches, non_empty, one_of, port_number, positive, relative_path,
                              read_resources, Section, show_key, type_of, http_url, parse_quantity)
from node.config_live import LiveConfig, ServerHeartbeatConfig, read_live, read_server_heartbeat
from node.errors import ConfigError

__all__ = ["NodeConfig", "DatabaseConfig", "KubernetesConfig", "ProxyConfig", "ImagesConfig", "ResourcesConfig",
           "MaxResourcesConfig", "JobConfig", "StorageConfig", "CompletionConfig", "FinishingConfig", "OutputConfig",
           "LimitsConfig",
           "HealthConfig", "LiveConfig", "load_config", "parse_config", "parse_quantity", "env_suffix", "API_KEY_ENV",
           "NODE_ID_RE", "LABEL_RE", "DNS_LABEL_RE", "DNS_SUBDOMAIN_RE", "LABEL_KEY_RE", "LABEL_VALUE_RE",
           "RESOURCE_NAMES", "FILE_DATABASE_TYPES", "DATABASE_TYPES"]

API_KEY_ENV = "NODE_API_KEY"

# Database types whose uri is a single file, and the one whose uri is a directory.
FILE_DATABASE_TYPES = ("csv", "parquet", "excel", "sqlite")
DIRECTORY_DATABASE_TYPES = ("folder",)
DATABASE_TYPES = FILE_DATABASE_TYPES + DIRECTORY_DATABASE_TYPES

# --- settings --------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatabaseConfig:
    label: str
    uri: str          # hostPath mode: absolute host path; pvc mode: path inside the claim
    type: str = "csv"

    @property
    def env_suffix(self) -> str:
        """The label as used in env var names: upper case, ``-`` → ``_``."""
        return env_suffix(self.label)


def env_suffix(label: str) -> str:
    return label.upper().replace("-", "_")


@dataclass(frozen=True)
class KubernetesConfig:
    kubeconfig: str | None = None
    context: str | None = None
    jobs_namespace: str = "v6-jobs"


@dataclass(frozen=True)
class ProxyConfig:
    host: str = "v6-proxy.v6-node.svc.cluster.local"
    port: int = 8080  # the Service's port (pods connect to it; env PORT)
    # Where the proxy's pods are, for the algorithm pods' NetworkPolicy; the Service (in the
    # same namespace) gives its ClusterIP (hostAliases) and targetPort (the policy's port).
    namespace: str = "v6-node"
    service: str = "v6-proxy"
    pod_labels: dict[str, str] = field(default_factory=lambda: {"app": "v6-proxy"})


@dataclass(frozen=True)
class ImagesConfig:
    # fnmatch patterns over the full image reference; empty = nothing allowed.
    allowed: tuple[str, ...] = ()
    # "optional": tags and digests; "required": only name@sha256:<digest> references run, so
    # what the allow-list lets through cannot change under a mutable tag; "pin": a tag's first
    # run pins it to the digest that ran, later runs with another digest are refused (node.pins)
    digest: str = "optional"


@dataclass(frozen=True)
class ResourcesConfig:
    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "100m", "memory": "128Mi"})
    limits: dict[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "512Mi"})


@dataclass(frozen=True)
class MaxResourcesConfig:
    cpu: str = "4"
    memory: str = "8Gi"
    gpu: int = 1


@dataclass(frozen=True)
class JobConfig:
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    max_resources: MaxResourcesConfig = field(default_factory=MaxResourcesConfig)
    deadline_seconds: int = 3600
    ttl_seconds_after_finished: int = 600
    backoff_limit: int = 0
    termination_grace_seconds: int = 10
    run_as_user: int = 1000
    run_as_group: int = 1000
    runtime_class_name: str | None = None
    gpu_runtime_class_name: str | None = None
    # A pod no node can take (PodScheduled=False, Unschedulable) is reported as pending with the
    # scheduler's reason this long, in case capacity frees up (autoscaler, other runs ending),
    # and then fails (start failed). 0: fail at once.
    unschedulable_grace_seconds: float = 300.0


@dataclass(frozen=True)
class StorageConfig:
    mode: str = "hostPath"            # or "pvc"
    claim_name: str | None = None


@dataclass(frozen=True)
class CompletionConfig:
    mode: str = "watch"               # or "poll"
    poll_interval_seconds: float = 1.0
    watch_timeout_seconds: int = 300
    request_timeout_seconds: float = 30.0


MAX_FINISHING_WORKERS = 64


@dataclass(frozen=True)
class FinishingConfig:
    # Threads that read an ended run's pods, logs and output and then delete its Job and files
    # (and read the events of runs that may be stuck), so that many runs ending together do not
    # wait for each other's API calls. Each may hold one connection to the API server. 0: all of
    # it on the agent thread, one run after another (for debugging).
    workers: int = 8
    queue_size: int = 1000            # work waiting for a worker; more makes the agent wait


@dataclass(frozen=True)
class OutputConfig:
    keep: bool = False
    max_bytes: int = 10 * 1024 * 1024


@dataclass(frozen=True)
class LimitsConfig:
    max_payload_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class HealthConfig:
    host: str = "127.0.0.1"
    port: int = 8081


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    api_key: str = field(repr=False)
    server_url: str
    task_dir: str
    databases: tuple[DatabaseConfig, ...] = ()
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    job: JobConfig = field(default_factory=JobConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    completion: CompletionConfig = field(default_factory=CompletionConfig)
    finishing: FinishingConfig = field(default_factory=FinishingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    server_heartbeat: ServerHeartbeatConfig = field(default_factory=ServerHeartbeatConfig)

    def database(self, label: str) -> DatabaseConfig | None:
        for db in self.databases:
            if db.label == label:
                return db
        return None


def _read_databases(raw: object, mode: str | None,
                    problems: list[tuple[str, str]]) -> tuple[DatabaseConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(("databases", f"must be a list, got {type_of(raw)}"))
        return ()
    out: list[DatabaseConfig] = []
    labels: dict[str, int] = {}
    env_names: dict[str, str] = {}
    for i, item in enumerate(raw):
        sec = Section(item, f"databases[{i}]", problems)
        label = sec.get("label", str, check=matches(LABEL_RE, "database label"))
        uri = sec.get("uri", str, check=relative_path if mode == "pvc" else absolute_path)
        kind = sec.get("type", str, "csv", check=one_of(*DATABASE_TYPES))
        sec.finish()
        if label is not None:
            if label in labels:
                sec.problem("label", f"duplicate label {label!r} (also databases[{labels[label]}])")
            elif env_suffix(label) in env_names:
                sec.problem("label", f"labels {label!r} and {env_names[env_suffix(label)]!r} give the same "
                                     f"env var DATABASE_URI_{env_suffix(label)}")
            labels.setdefault(label, i)
            env_names.setdefault(env_suffix(label), label)
        if label is not None and uri is not None and kind is not None:
            out.append(DatabaseConfig(label=label, uri=posixpath.normpath(uri), type=kind))
    return tuple(out)


def _read_pod_labels(sec: Section) -> dict[str, str] | None:
    sec.seen.add("pod_labels")
    if "pod_labels" not in sec.raw:
        return {"app": "v6-proxy"}
    raw = sec.raw["pod_labels"]
    if not isinstance(raw, dict) or not raw:
        sec.problem("pod_labels", f"must be a non-empty mapping of label keys to values, got {type_of(raw)}")
        return None
    out = {}
    for k, v in raw.items():
        if not isinstance(k, str) or LABEL_KEY_RE.fullmatch(k) is None:
            sec.problem("pod_labels", f"{show_key(k)!r} is not a valid label key")
        elif not isinstance(v, str) or LABEL_VALUE_RE.fullmatch(v) is None:
            sec.problem(f"pod_labels.{k}", f"{show_key(v)!r} is not a valid label value")
        else:
            out[k] = v
    return out


def _read_job(sec: Section, problems: list[tuple[str, str]]) -> JobConfig:
    d = JobConfig()
    res = sec.section("resources")
    requests_sec, limits_sec = res.section("requests"), res.section("limits")
    requests = read_resources(requests_sec) if "requests" in res.raw else dict(d.resources.requests)
    limits = read_resources(limits_sec) if "limits" in res.raw else dict(d.resources.limits)
    res.finish()
    mx = sec.section("max_resources")
    max_cpu = get_quantity(mx, "cpu", d.max_resources.cpu)
    max_memory = get_quantity(mx, "memory", d.max_resources.memory)
    max_gpu = mx.get("gpu", int, d.max_resources.gpu, check=at_least(0))
    mx.finish()
    values = dict(
        deadline_seconds=sec.get("deadline_seconds", int, d.deadline_seconds, check=at_least(1)),
        ttl_seconds_after_finished=sec.get("ttl_seconds_after_finished", int, d.ttl_seconds_after_finished,
                                           check=at_least(0)),
        backoff_limit=sec.get("backoff_limit", int, d.backoff_limit, check=at_least(0)),
        termination_grace_seconds=sec.get("termination_grace_seconds", int, d.termination_grace_seconds,
                                          check=at_least(0)),
        # runAsNonRoot: uid 0 would make every pod fail to start.
        run_as_user=sec.get("run_as_user", int, d.run_as_user, check=at_least(1)),
        run_as_group=sec.get("run_as_group", int, d.run_as_group, check=at_least(0)),
        runtime_class_name=sec.get("runtime_class_name", str, None, nullable=True,
                                   check=matches(DNS_SUBDOMAIN_RE, "runtime class name")),
        gpu_runtime_class_name=sec.get("gpu_runtime_class_name", str, None, nullable=True,
                                       check=matches(DNS_SUBDOMAIN_RE, "runtime class name")),
        unschedulable_grace_seconds=sec.get("unschedulable_grace_seconds", float,
                                            d.unschedulable_grace_seconds, check=at_least(0)),
    )
    sec.finish()
    for name in RESOURCE_NAMES:
        if name in requests and name in limits and \
                parse_quantity(requests[name]) > parse_quantity(limits[name]):
            problems.append((f"job.resources.requests.{name}",
                             f"{requests[name]} is more than the limit {limits[name]}"))
    for name, cap in (("cpu", max_cpu), ("memory", max_memory)):
        for kind, given in (("requests", requests), ("limits", limits)):
            if cap is not None and name in given and parse_quantity(given[name]) > parse_quantity(cap):
                problems.append((f"job.resources.{kind}.{name}",
                                 f"{given[name]} is more than job.max_resources.{name} {cap}"))
    # Built even when some values are bad: parse_config raises before anyone sees it.
    return JobConfig(resources=ResourcesConfig(requests=requests, limits=limits),
                     max_resources=MaxResourcesConfig(cpu=max_cpu, memory=max_memory, gpu=max_gpu),
                     **values)


def parse_config(data: object, env: Mapping[str, str] | None = None) -> NodeConfig:
    """A validated NodeConfig from a mapping (as read from YAML); raises ConfigError."""
    env = os.environ if env is None else env
    problems: list[tuple[str, str]] = []
    top = Section(data, "", problems)

    node_id = top.get("node_id", str, check=matches(NODE_ID_RE, "node id"))
    env_key = env.get(API_KEY_ENV) or None
    if env_key is not None:
        top.seen.add("api_key")
        api_key = env_key
        if "api_key" in top.raw and not isinstance(top.raw["api_key"], (str, type(None))):
            top.problem("api_key", f"must be a string, got {type_of(top.raw['api_key'])}")
    else:
        top.seen.add("api_key")
        raw_key = top.raw.get("api_key")
        if raw_key is None:
            top.problem("api_key", f"is required (in the file or in env var {API_KEY_ENV})")
            api_key = None
        elif not isinstance(raw_key, str):
            top.problem("api_key", f"must be a string, got {type_of(raw_key)}")
            api_key = None
        elif not raw_key.strip():
            top.problem("api_key", "must not be empty")
            api_key = None
        else:
            api_key = raw_key
    server_url = top.get("server_url", str, check=http_url)
    task_dir = top.get("task_dir", str, check=absolute_path)

    # storage first: it decides how database uris are read
    st = top.section("storage")
    mode = st.get("mode", str, "hostPath", check=one_of("hostPath", "pvc"))
    claim_name = st.get("claim_name", str, None, nullable=True,
                        check=matches(DNS_SUBDOMAIN_RE, "claim name"))
    st.finish()
    if mode == "pvc" and claim_name is None and "claim_name" not in st.raw:
        problems.append(("storage.claim_name", "is required when storage.mode is pvc"))
    storage = StorageConfig(mode=mode, claim_name=claim_name)

    top.seen.add("databases")
    databases = _read_databases(top.raw.get("databases"), mode, problems)

    k = top.section("kubernetes")
    kubernetes = KubernetesConfig(
        kubeconfig=k.get("kubeconfig", str, None, nullable=True, check=non_empty),
        context=k.get("context", str, None, nullable=True, check=non_empty),
        jobs_namespace=k.get("jobs_namespace", str, "v6-jobs", check=matches(DNS_LABEL_RE, "namespace")),
    )
    k.finish()

    p = top.section("proxy")
    proxy = ProxyConfig(
        host=p.get("host", str, ProxyConfig.host, check=matches(HOST_RE, "host name", HOST_RULE)),
        port=p.get("port", int, ProxyConfig.port, check=port_number(1)),
        namespace=p.get("namespace", str, ProxyConfig.namespace, check=matches(DNS_LABEL_RE, "namespace")),
        service=p.get("service", str, ProxyConfig.service, check=matches(DNS_LABEL_RE, "service name")),
        pod_labels=_read_pod_labels(p),
    )
    p.finish()

    im = top.section("images")
    allowed = im.get("allowed", list, [])
    if allowed is not None:
        for i, pattern in enumerate(allowed):
            if not isinstance(pattern, str) or not pattern.strip():
                problems.append((f"images.allowed[{i}]", f"must be a non-empty string, got {type_of(pattern)}"))
    digest = im.get("digest", str, ImagesConfig.digest, check=one_of("optional", "required", "pin"))
    im.finish()
    images = ImagesConfig(allowed=tuple(a for a in allowed or () if isinstance(a, str)),
                          digest=digest or ImagesConfig.digest)

    job = _read_job(top.section("job"), problems)

    c = top.section("completion")
    completion = CompletionConfig(
        mode=c.get("mode", str, "watch", check=one_of("watch", "poll")),
        poll_interval_seconds=c.get("poll_interval_seconds", float, 1.0, check=positive),
        watch_timeout_seconds=c.get("watch_timeout_seconds", int, 300, check=at_least(1)),
        request_timeout_seconds=c.get("request_timeout_seconds", float, 30.0, check=positive),
    )
    c.finish()

    fi = top.section("finishing")
    finishing = FinishingConfig(
        workers=fi.get("workers", int, FinishingConfig.workers,
                       check=lambda n: None if 0 <= n <= MAX_FINISHING_WORKERS else
                       f"must be 0..{MAX_FINISHING_WORKERS}, got {n}"),
        queue_size=fi.get("queue_size", int, FinishingConfig.queue_size, check=at_least(1)),
    )
    fi.finish()

    o = top.section("output")
    output = OutputConfig(keep=o.get("keep", bool, False),
                          max_bytes=o.get("max_bytes", int, OutputConfig.max_bytes, check=at_least(1)))
    o.finish()

    li = top.section("limits")
    limits = LimitsConfig(max_payload_bytes=li.get("max_payload_bytes", int, LimitsConfig.max_payload_bytes,
                                                   check=at_least(1)))
    li.finish()

    h = top.section("health")
    health = HealthConfig(host=h.get("host", str, "127.0.0.1", check=matches(HOST_RE, "host name", HOST_RULE)),
                          port=h.get("port", int, 8081, check=port_number(0)))
    h.finish()
    live = read_live(top.section("live"))
    server_heartbeat = read_server_heartbeat(top.section("server_heartbeat"))
    top.finish()

    if problems:
        # A key may have been pasted into another field too; never echo it.
        for secret in (env_key, top.raw.get("api_key")):
            if isinstance(secret, str) and len(secret) >= 4:
                problems = [(k, p.replace(secret, "<api key>")) for k, p in problems]
        raise ConfigError.collect(problems)
    return NodeConfig(node_id=node_id, api_key=api_key, server_url=server_url,
                      task_dir=posixpath.normpath(task_dir), databases=databases, kubernetes=kubernetes,
                      proxy=proxy, images=images, job=job, storage=storage, completion=completion,
                      finishing=finishing, output=output, limits=limits, health=health, live=live,
                      server_heartbeat=server_heartbeat)


def load_config(path: str | os.PathLike, env: Mapping[str, str] | None = None) -> NodeConfig:
    """Read and validate the node's YAML configuration file; raises ConfigError."""
    where = os.fspath(path)
    try:
        with open(where, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(where, f"cannot read the file: {type(e).__name__}: {getattr(e, 'strerror', None) or e}") from e
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        # Only the problem and position: the error's context snippet could show the api key.
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or type(e).__name__
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(where, f"not valid YAML: {problem}{at}") from e
    return parse_config(data, env)
