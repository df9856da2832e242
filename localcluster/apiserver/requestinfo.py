"""What a request asks for, in the authorizer's terms: the real API server's RequestInfo.

Parsed from the path alone, before routing, as the real one does: a request for a type that is not
served is still a resource request (authorized first, then 404), and `/api`, `/api/v1`,
`/apis/<group>/<version>`, `/version` are non-resource requests (verb: the lower-case HTTP
method).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

_SPECIAL_VERBS = ("watch", "proxy")  # the deprecated /api/v1/watch/... and /proxy/... forms
_NAMESPACE_SUBRESOURCES = ("status", "finalize")
_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update",
                 "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class RequestInfo:
    is_resource: bool
    path: str
    verb: str
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""


def _query_watch(values: str | None) -> bool:
    # any value but "false" or "0" is true (Go's conversion of ?watch=)
    return values is not None and values.lower() not in ("false", "0")


def field_selector_name(selector: str | None) -> str:
    """The name a field selector pins (``metadata.name=x`` as one of its terms), else ""."""
    for term in (selector or "").split(","):
        key, sep, value = term.partition("==") if "==" in term else term.partition("=")
        if sep and not key.endswith("!") and key.strip() == "metadata.name":
            value = value.strip()
            if value and "/" not in value and value not in (".", ".."):
                return value
    return ""


def parse(method: str, path: str, query: Mapping[str, str] | None = None) -> RequestInfo:
    query = query or {}
    parts = [p for p in path.strip("/").split("/") if p] if path.strip("/") else []
    plain = RequestInfo(False, path, method.lower())
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return plain
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(parts) < 3:
            return plain
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    verb = _METHOD_VERBS.get(method.upper(), "")
    if parts[0] in _SPECIAL_VERBS and len(parts) >= 2:
        verb, parts = parts[0], parts[1:]
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    subresource = parts[2] if len(parts) >= 3 and verb != "proxy" else ""
    if not name and verb == "get":
        verb = "watch" if _query_watch(query.get("watch")) else "list"
    if not name and verb in ("list", "watch"):
        # a list or watch pinned to one name is authorized as that name (resourceNames)
        name = field_selector_name(query.get("fieldSelector"))
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestInfo(True, path, verb, group, version, namespace, resource, subresource, name)
