"""The ``live:`` and ``server_heartbeat:`` sections of the node configuration (CONTRACTS §2, §8,
§9): the live channel to running algorithms, and the node's heartbeats to the server."""
from __future__ import annotations

from dataclasses import dataclass, field

from node.config_read import (DNS_LABEL_RE, HOST_RE, HOST_RULE, LABEL_KEY_RE, LABEL_VALUE_RE,
                              Section, at_least, matches, non_empty, one_of, port_number, positive,
                              show_key, type_of)
from node.isolation_probe import parse_address


@dataclass(frozen=True)
class LiveConfig:
    """The live channel to running algorithms: a ZeroMQ sidecar in every algorithm pod."""
    enabled: bool = True  # every algorithm pod gets the sidecar (needs Kubernetes >= 1.29)
    pub_port: int = 5555              # the sidecar's PUB socket, on the pod IP
    rep_port: int = 5556              # the sidecar's REP socket (ping -> pong)
    heartbeat_seconds: float = 1.0
    suspect_after: int = 3            # missed heartbeats before a run is suspected
    fail_after: int = 6               # ... before it is marked unresponsive
    node_pub_host: str = "127.0.0.1"  # the node's own PUB socket (python -m node monitor)
    node_pub_port: int = 5560         # 0 = pick a free one (written to the log)
    # the node's ZeroMQ context: a followed run holds one socket, two while a ping is out
    # (libzmq's default of 1023 would stop the channel at ~500 runs)
    max_sockets: int = 65536
    sidecar_image: str = "v6-demo/node"
    # who may connect to the sidecars (the NetworkPolicy's only ingress): the node's pods
    node_namespace: str = "v6-node"
    node_pod_labels: dict[str, str] = field(default_factory=lambda: {"app": "v6-node"})
    # a run whose sidecar's isolation probe failed: "fail" (status failed, output withheld) or
    # "report" (its status as it ended, the failure in its provenance and logs; for clusters
    # known to have no isolation, such as the local cluster's host network)
    on_isolation_failure: str = "fail"
    # the sidecar checks from inside each pod that the proxy answers and that DNS and the
    # addresses below (with the server's and the API server's) cannot be reached (CONTRACTS §9)
    isolation_probe: bool = True
    probe_blocked: tuple[str, ...] = ()  # more "host:port" the pods must not reach


def _labels(sec: Section, key: str, default: dict[str, str]) -> dict[str, str]:
    sec.seen.add(key)
    if key not in sec.raw:
        return dict(default)
    raw = sec.raw[key]
    if not isinstance(raw, dict) or not raw:
        sec.problem(key, f"must be a non-empty mapping of label keys to values, got {type_of(raw)}")
        return dict(default)
    out = {}
    for k, v in raw.items():
        if not isinstance(k, str) or LABEL_KEY_RE.fullmatch(k) is None:
            sec.problem(key, f"{show_key(k)!r} is not a valid label key")
        elif not isinstance(v, str) or LABEL_VALUE_RE.fullmatch(v) is None:
            sec.problem(f"{key}.{k}", f"{show_key(v)!r} is not a valid label value")
        else:
            out[k] = v
    return out


def _addresses(sec: Section, key: str) -> tuple[str, ...]:
    raw = sec.get(key, list, [])
    out = []
    for i, item in enumerate(raw or []):
        problem = _address_problem(item)
        if problem:
            sec.problem(f"{key}[{i}]", problem)
        else:
            out.append(item)
    if len(out) > MAX_PROBE_BLOCKED:
        sec.problem(key, f"at most {MAX_PROBE_BLOCKED} addresses, got {len(out)}")
    return tuple(out)


MAX_PROBE_BLOCKED = 12  # the sidecar checks 16 at most, the server's and the API's among them


def _address_problem(item: object) -> str | None:
    if not isinstance(item, str):
        return f"must be a host:port text, got {type_of(item)}"
    try:
        host, _ = parse_address(item)
    except ValueError as e:
        return str(e)
    if ":" not in host and HOST_RE.fullmatch(host) is None:  # an IPv6 one parse_address checked
        return f"{show_key(item)!r}: {HOST_RULE}"
    return None


MAX_SOCKETS_RANGE = (16, 1 << 20)  # libzmq allocates its socket table for the maximum at once


def _max_sockets(value: int) -> str | None:
    low, high = MAX_SOCKETS_RANGE
    return None if low <= value <= high else f"must be from {low} to {high}, got {value}"


def read_live(sec: Section) -> LiveConfig:
    d = LiveConfig()
    values = dict(
        enabled=sec.get("enabled", bool, d.enabled),
        pub_port=sec.get("pub_port", int, d.pub_port, check=port_number(1)),
        rep_port=sec.get("rep_port", int, d.rep_port, check=port_number(1)),
        heartbeat_seconds=sec.get("heartbeat_seconds", float, d.heartbeat_seconds, check=positive),
        suspect_after=sec.get("suspect_after", int, d.suspect_after, check=at_least(1)),
        fail_after=sec.get("fail_after", int, d.fail_after, check=at_least(2)),
        node_pub_host=sec.get("node_pub_host", str, d.node_pub_host,
                              check=matches(HOST_RE, "host name", HOST_RULE)),
        node_pub_port=sec.get("node_pub_port", int, d.node_pub_port, check=port_number(0)),
        max_sockets=sec.get("max_sockets", int, d.max_sockets, check=_max_sockets),
        sidecar_image=sec.get("sidecar_image", str, d.sidecar_image, check=non_empty),
        node_namespace=sec.get("node_namespace", str, d.node_namespace,
                               check=matches(DNS_LABEL_RE, "namespace")),
        on_isolation_failure=sec.get("on_isolation_failure", str, d.on_isolation_failure,
                                     check=one_of("fail", "report")),
    )
    labels = _labels(sec, "node_pod_labels", d.node_pod_labels)
    values["isolation_probe"] = sec.get("isolation_probe", bool, d.isolation_probe)
    values["probe_blocked"] = _addresses(sec, "probe_blocked")
    sec.finish()
    if values["pub_port"] is not None and values["pub_port"] == values["rep_port"]:
        sec.problem("rep_port", "must differ from live.pub_port")
    suspect, fail = values["suspect_after"], values["fail_after"]
    if suspect is not None and fail is not None and suspect >= fail:
        sec.problem("fail_after", f"must be more than live.suspect_after ({suspect})")
    # Built even when some values are bad: parse_config raises before anyone sees it.
    return LiveConfig(node_pod_labels=labels, **values)


@dataclass(frozen=True)
class ServerHeartbeatConfig:
    """The node's heartbeats to the server and how long it waits for their acks (the server's
    own ``heartbeat.interval_seconds`` must not be shorter than this interval)."""
    interval_seconds: float = 5.0
    suspect_after: int = 3            # missed acks before the server is suspected
    fail_after: int = 6               # ... before the node drops the connection and reconnects


def read_server_heartbeat(sec: Section) -> ServerHeartbeatConfig:
    d = ServerHeartbeatConfig()
    values = dict(
        interval_seconds=sec.get("interval_seconds", float, d.interval_seconds, check=positive),
        suspect_after=sec.get("suspect_after", int, d.suspect_after, check=at_least(1)),
        fail_after=sec.get("fail_after", int, d.fail_after, check=at_least(2)),
    )
    sec.finish()
    suspect, fail = values["suspect_after"], values["fail_after"]
    if suspect is not None and fail is not None and suspect >= fail:
        sec.problem("fail_after", f"must be more than server_heartbeat.suspect_after ({suspect})")
    return ServerHeartbeatConfig(**values)  # as read_live: parse_config raises on any problem
