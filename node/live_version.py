"""The live channel needs native sidecar containers: the cluster's version is checked at start."""
from __future__ import annotations

import json
from typing import Any

from kubernetes import client as k8s

from node.cluster import translate_error
from node.errors import ClusterError

MIN_VERSION = (1, 29)   # native sidecars: beta and on by default from 1.29, stable from 1.33


def check_cluster_version(api_client: Any) -> str:
    """The cluster's version, or ClusterError when it is too old for native sidecars."""
    try:
        # raw JSON: the client's model insists on fields (buildDate...) some clusters omit
        resp = k8s.VersionApi(api_client).get_code(_request_timeout=30, _preload_content=False)
        try:
            info = json.loads(resp.data)
        finally:
            resp.release_conn()
    except Exception as e:  # any failure of the client: translated at this boundary, transient
        # (5xx, 429, a cut connection) kept transient so that the caller's retry policy applies
        raise translate_error(e, "cannot read the cluster's version (/version)") from e
    if not isinstance(info, dict):
        raise ClusterError("cannot read the cluster's version: /version is not a JSON object")
    return version_problem(info.get("major"), info.get("minor"), info.get("gitVersion"))


def version_problem(major: str | None, minor: str | None, git_version: str | None) -> str:
    """Pure part of the check: returns the version text, raises ClusterError when too old."""
    def number(text: str | None) -> int | None:
        digits = "".join(ch for ch in (text or "") if ch.isdigit())  # GKE says "29+"
        return int(digits) if digits else None
    found = (number(major), number(minor))
    text = git_version or f"{major}.{minor}"
    if None in found:
        raise ClusterError(f"cannot tell the cluster's version from /version ({text!r})")
    if found < MIN_VERSION:
        raise ClusterError(
            f"the cluster runs Kubernetes {text}; the live channel (live.enabled) needs native "
            f"sidecar containers, Kubernetes {MIN_VERSION[0]}.{MIN_VERSION[1]} or newer. "
            f"Upgrade the cluster or set live.enabled: false")
    return text
