"""Node configuration: typed, frozen settings loaded once from YAML (CONTRACTS §8).

``load_config`` reads the file, ``parse_config`` validates a mapping. Every problem is collected and
reported together in one ``ConfigError`` (one line per problem, naming the key), because a user
fixing a configuration file wants to see all problems at once. The API key may come from the
``NODE_API_KEY`` environment variable instead of the file (the variable wins); it never appears
in a ``repr`` or in an error message.
"""
from __future__ import annotations

import difflib
import os
import posixpath
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import yaml

from node.errors import ConfigError

API_KEY_ENV = "NODE_API_KEY"

NODE_ID_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?", re.ASCII)
LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?", re.ASCII)
DNS_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
DNS_SUBDOMAIN_RE = re.compile(r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*",
                              re.ASCII)
# Kubernetes label keys ([prefix/]name) and values.
_LABEL_NAME = r"([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)"
LABEL_KEY_RE = re.compile(rf"({DNS_SUBDOMAIN_RE.pattern}/)?{_LABEL_NAME}", re.ASCII)
LABEL_VALUE_RE = re.compile(rf"{_LABEL_NAME}?", re.ASCII)
_HOST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]", re.ASCII)

# Database types whose uri is a single file, and the one whose uri is a directory.
FILE_DATABASE_TYPES = ("csv", "parquet", "excel", "sqlite")
DIRECTORY_DATABASE_TYPES = ("folder",)
DATABASE_TYPES = FILE_DATABASE_TYPES + DIRECTORY_DATABASE_TYPES
RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")

# --- Kubernetes quantities -------------------------------------------------------------------

_QUANTITY_RE = re.compile(
    r"(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?", re.ASCII)
_SUFFIX = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}


def parse_quantity(text: object) -> Decimal:
    """The value of a non-negative Kubernetes quantity ("100m", "1", "512Mi", "1e3", 2).

    Raises ValueError for anything else (negative numbers, garbage, bools).
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"not a quantity: {type(text).__name__}")
    s = str(text)
    m = _QUANTITY_RE.fullmatch(s)
    if m is None:
        raise ValueError(f"not a Kubernetes quantity: {s[:40]!r}")
    suffix = m.group("suffix") or ""
    try:
        num = Decimal(m.group("num"))
        if suffix[:1] in ("e", "E") and len(suffix) > 1:
            exponent = int(suffix[1:])
            if abs(exponent) > 30:
                raise ValueError(f"exponent out of range: {s[:40]!r}")
            return num.scaleb(exponent)
        return num * _SUFFIX[suffix]
    except InvalidOperation as e:
        raise ValueError(f"not a Kubernetes quantity: {s[:40]!r}") from e


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
    port: int = 8080
    # Where the proxy's pods are, for the algorithm pods' NetworkPolicy.
    namespace: str = "v6-node"
    pod_labels: dict[str, str] = field(default_factory=lambda: {"app": "v6-proxy"})


@dataclass(frozen=True)
class ImagesConfig:
    # fnmatch patterns over the full image reference; empty = nothing allowed.
    allowed: tuple[str, ...] = ()


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
    output: OutputConfig = field(default_factory=OutputConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    health: HealthConfig = field(default_factory=HealthConfig)

    def database(self, label: str) -> DatabaseConfig | None:
        for db in self.databases:
            if db.label == label:
                return db
        return None


# --- reading ---------------------------------------------------------------------------------

_MISSING: Any = object()
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a mapping"}


def _type_of(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _is(value: object, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _show_key(key: object) -> str:
    text = key if isinstance(key, str) else repr(key)
    return text if len(text) <= 60 else text[:57] + "..."


class _Section:
    """One mapping of the configuration; records problems instead of raising."""

    def __init__(self, raw: object, path: str, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        self.seen: set[str] = set()
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            problems.append((path or "<top level>", f"must be a mapping, got {_type_of(raw)}"))
            raw = {}
        self.raw: dict = raw

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def problem(self, name: str, text: str) -> None:
        self.problems.append((self.key(name), text))

    def get(self, name: str, kind: type, default: Any = _MISSING, *, nullable: bool = False,
            check: Callable[[Any], str | None] | None = None) -> Any:
        self.seen.add(name)
        if name not in self.raw:
            if default is _MISSING:
                self.problem(name, "is required")
                return None
            return default
        value = self.raw[name]
        if value is None and nullable:
            return None
        if not _is(value, kind):
            self.problem(name, f"must be {_TYPE_NAMES[kind]}, got {_type_of(value)}")
            return None
        if kind is float:
            value = float(value)
        if check is not None:
            msg = check(value)
            if msg:
                self.problem(name, msg)
                return None
        return value

    def section(self, name: str) -> "_Section":
        self.seen.add(name)
        return _Section(self.raw.get(name), self.key(name), self.problems)

    def finish(self) -> None:
        known = sorted(self.seen)
        for k in self.raw:
            if k in self.seen:
                continue
            hint = difflib.get_close_matches(str(k), known, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else f"; known keys: {', '.join(known)}"
            self.problems.append((self.key(_show_key(k)), f"unknown key{extra}"))


def _matches(regex: re.Pattern, what: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if regex.fullmatch(value) is None:
            return f"{_show_key(value)!r} is not a valid {what} (must match {regex.pattern})"
        return None
    return check


def _at_least(low: float) -> Callable[[float], str | None]:
    def check(value: float) -> str | None:
        return None if value >= low else f"must be at least {low:g}, got {value:g}"
    return check


def _positive(value: float) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value:g}"


def _port(low: int) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if low <= value <= 65535 else f"must be a port number {low}..65535, got {value}"
    return check


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if value in choices:
            return None
        return f"must be one of {', '.join(choices)}, got {_show_key(value)!r}"
    return check


def _non_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _absolute_path(value: str) -> str | None:
    if not value.startswith("/"):
        return f"must be an absolute path, got {_show_key(value)!r}"
    if "\0" in value or ".." in value.split("/"):
        return "must not contain '..' components or NUL characters"
    return None


def _relative_path(value: str) -> str | None:
    if not value or value.startswith("/"):
        return f"must be a path relative to the claim's root, got {_show_key(value)!r}"
    if "\0" in value or ".." in value.split("/"):
        return "must not contain '..' components or NUL characters"
    return None


def _url(value: str) -> str | None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return f"{_show_key(value)!r} is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http:// or https:// URL with a host, got {_show_key(value)!r}"
    return None


def _quantity_check(value: object) -> str | None:
    try:
        parse_quantity(value)
    except ValueError as e:
        return str(e)
    return None


def _get_quantity(sec: _Section, name: str, default: str | None) -> str | None:
    """A quantity given as a string or a plain YAML number (``cpu: 1``), kept as a string."""
    sec.seen.add(name)
    if name not in sec.raw:
        return default
    value = sec.raw[name]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        sec.problem(name, f"must be a Kubernetes quantity like \"500m\" or \"1Gi\", got {_type_of(value)}")
        return None
    msg = _quantity_check(value)
    if msg:
        sec.problem(name, msg)
        return None
    return str(value)


def _resources(sec: _Section) -> dict[str, str]:
    """A requests/limits mapping; only its valid entries (the problems are recorded)."""
    out = {}
    for res in RESOURCE_NAMES:
        value = _get_quantity(sec, res, None)
        if value is not None:
            out[res] = value
    sec.finish()
    return out


def _read_databases(raw: object, mode: str | None,
                    problems: list[tuple[str, str]]) -> tuple[DatabaseConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(("databases", f"must be a list, got {_type_of(raw)}"))
        return ()
    out: list[DatabaseConfig] = []
    labels: dict[str, int] = {}
    env_names: dict[str, str] = {}
    for i, item in enumerate(raw):
        sec = _Section(item, f"databases[{i}]", problems)
        label = sec.get("label", str, check=_matches(LABEL_RE, "database label"))
        uri = sec.get("uri", str, check=_relative_path if mode == "pvc" else _absolute_path)
        kind = sec.get("type", str, "csv", check=_one_of(*DATABASE_TYPES))
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


def _read_pod_labels(sec: _Section) -> dict[str, str] | None:
    sec.seen.add("pod_labels")
    if "pod_labels" not in sec.raw:
        return {"app": "v6-proxy"}
    raw = sec.raw["pod_labels"]
    if not isinstance(raw, dict) or not raw:
        sec.problem("pod_labels", f"must be a non-empty mapping of label keys to values, got {_type_of(raw)}")
        return None
    out = {}
    for k, v in raw.items():
        if not isinstance(k, str) or LABEL_KEY_RE.fullmatch(k) is None:
            sec.problem("pod_labels", f"{_show_key(k)!r} is not a valid label key")
        elif not isinstance(v, str) or LABEL_VALUE_RE.fullmatch(v) is None:
            sec.problem(f"pod_labels.{k}", f"{_show_key(v)!r} is not a valid label value")
        else:
            out[k] = v
    return out


def _read_job(sec: _Section, problems: list[tuple[str, str]]) -> JobConfig:
    d = JobConfig()
    res = sec.section("resources")
    requests_sec, limits_sec = res.section("requests"), res.section("limits")
    requests = _resources(requests_sec) if "requests" in res.raw else dict(d.resources.requests)
    limits = _resources(limits_sec) if "limits" in res.raw else dict(d.resources.limits)
    res.finish()
    mx = sec.section("max_resources")
    max_cpu = _get_quantity(mx, "cpu", d.max_resources.cpu)
    max_memory = _get_quantity(mx, "memory", d.max_resources.memory)
    max_gpu = mx.get("gpu", int, d.max_resources.gpu, check=_at_least(0))
    mx.finish()
    values = dict(
        deadline_seconds=sec.get("deadline_seconds", int, d.deadline_seconds, check=_at_least(1)),
        ttl_seconds_after_finished=sec.get("ttl_seconds_after_finished", int, d.ttl_seconds_after_finished,
                                           check=_at_least(0)),
        backoff_limit=sec.get("backoff_limit", int, d.backoff_limit, check=_at_least(0)),
        termination_grace_seconds=sec.get("termination_grace_seconds", int, d.termination_grace_seconds,
                                          check=_at_least(0)),
        # runAsNonRoot: uid 0 would make every pod fail to start.
        run_as_user=sec.get("run_as_user", int, d.run_as_user, check=_at_least(1)),
        run_as_group=sec.get("run_as_group", int, d.run_as_group, check=_at_least(0)),
        runtime_class_name=sec.get("runtime_class_name", str, None, nullable=True,
                                   check=_matches(DNS_SUBDOMAIN_RE, "runtime class name")),
        gpu_runtime_class_name=sec.get("gpu_runtime_class_name", str, None, nullable=True,
                                       check=_matches(DNS_SUBDOMAIN_RE, "runtime class name")),
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
    top = _Section(data, "", problems)

    node_id = top.get("node_id", str, check=_matches(NODE_ID_RE, "node id"))
    env_key = env.get(API_KEY_ENV) or None
    if env_key is not None:
        top.seen.add("api_key")
        api_key = env_key
        if "api_key" in top.raw and not isinstance(top.raw["api_key"], (str, type(None))):
            top.problem("api_key", f"must be a string, got {_type_of(top.raw['api_key'])}")
    else:
        top.seen.add("api_key")
        raw_key = top.raw.get("api_key")
        if raw_key is None:
            top.problem("api_key", f"is required (in the file or in env var {API_KEY_ENV})")
            api_key = None
        elif not isinstance(raw_key, str):
            top.problem("api_key", f"must be a string, got {_type_of(raw_key)}")
            api_key = None
        elif not raw_key.strip():
            top.problem("api_key", "must not be empty")
            api_key = None
        else:
            api_key = raw_key
    server_url = top.get("server_url", str, check=_url)
    task_dir = top.get("task_dir", str, check=_absolute_path)

    # storage first: it decides how database uris are read
    st = top.section("storage")
    mode = st.get("mode", str, "hostPath", check=_one_of("hostPath", "pvc"))
    claim_name = st.get("claim_name", str, None, nullable=True,
                        check=_matches(DNS_SUBDOMAIN_RE, "claim name"))
    st.finish()
    if mode == "pvc" and claim_name is None and "claim_name" not in st.raw:
        problems.append(("storage.claim_name", "is required when storage.mode is pvc"))
    storage = StorageConfig(mode=mode, claim_name=claim_name)

    top.seen.add("databases")
    databases = _read_databases(top.raw.get("databases"), mode, problems)

    k = top.section("kubernetes")
    kubernetes = KubernetesConfig(
        kubeconfig=k.get("kubeconfig", str, None, nullable=True, check=_non_empty),
        context=k.get("context", str, None, nullable=True, check=_non_empty),
        jobs_namespace=k.get("jobs_namespace", str, "v6-jobs", check=_matches(DNS_LABEL_RE, "namespace")),
    )
    k.finish()

    p = top.section("proxy")
    proxy = ProxyConfig(
        host=p.get("host", str, ProxyConfig.host, check=_matches(_HOST_RE, "host name")),
        port=p.get("port", int, ProxyConfig.port, check=_port(1)),
        namespace=p.get("namespace", str, ProxyConfig.namespace, check=_matches(DNS_LABEL_RE, "namespace")),
        pod_labels=_read_pod_labels(p),
    )
    p.finish()

    im = top.section("images")
    allowed = im.get("allowed", list, [])
    if allowed is not None:
        for i, pattern in enumerate(allowed):
            if not isinstance(pattern, str) or not pattern.strip():
                problems.append((f"images.allowed[{i}]", f"must be a non-empty string, got {_type_of(pattern)}"))
    im.finish()
    images = ImagesConfig(allowed=tuple(a for a in allowed or () if isinstance(a, str)))

    job = _read_job(top.section("job"), problems)

    c = top.section("completion")
    completion = CompletionConfig(
        mode=c.get("mode", str, "watch", check=_one_of("watch", "poll")),
        poll_interval_seconds=c.get("poll_interval_seconds", float, 1.0, check=_positive),
        watch_timeout_seconds=c.get("watch_timeout_seconds", int, 300, check=_at_least(1)),
        request_timeout_seconds=c.get("request_timeout_seconds", float, 30.0, check=_positive),
    )
    c.finish()

    o = top.section("output")
    output = OutputConfig(keep=o.get("keep", bool, False),
                          max_bytes=o.get("max_bytes", int, OutputConfig.max_bytes, check=_at_least(1)))
    o.finish()

    li = top.section("limits")
    limits = LimitsConfig(max_payload_bytes=li.get("max_payload_bytes", int, LimitsConfig.max_payload_bytes,
                                                   check=_at_least(1)))
    li.finish()

    h = top.section("health")
    health = HealthConfig(host=h.get("host", str, "127.0.0.1", check=_matches(_HOST_RE, "host name")),
                          port=h.get("port", int, 8081, check=_port(0)))
    h.finish()
    top.finish()

    if problems:
        raise ConfigError.collect(problems)
    return NodeConfig(node_id=node_id, api_key=api_key, server_url=server_url,
                      task_dir=posixpath.normpath(task_dir), databases=databases, kubernetes=kubernetes,
                      proxy=proxy, images=images, job=job, storage=storage, completion=completion,
                      output=output, limits=limits, health=health)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {_show_key(key)!r}", key_node.start_mark)
        seen.add(key) if isinstance(key, (str, int, float, bool)) else None
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_config(path: str | os.PathLike, env: Mapping[str, str] | None = None) -> NodeConfig:
    """Read and validate the node's YAML configuration file; raises ConfigError."""
    where = os.fspath(path)
    try:
        with open(where, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(where, f"cannot read the file: {type(e).__name__}: {getattr(e, 'strerror', None) or e}") from e
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        # Only the problem and position: the error's context snippet could show the api key.
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or type(e).__name__
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(where, f"not valid YAML: {problem}{at}") from e
    return parse_config(data, env)
