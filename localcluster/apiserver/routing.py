"""Parsing Kubernetes REST paths into a target (resource, namespace, name, subresource)."""
from __future__ import annotations

from dataclasses import dataclass

from localcluster.apiserver.errors import ApiError
from localcluster.apiserver.resources import NAMESPACES, Resource, lookup


@dataclass(frozen=True)
class Target:
    res: Resource
    namespace: str | None
    name: str | None
    subresource: str | None

    @property
    def metric_resource(self) -> str:
        return f"{self.res.plural}/{self.subresource}" if self.subresource else self.res.plural


def _not_found(path: str) -> ApiError:
    return ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")


def parse(path: str) -> tuple[str, str, list[str]]:
    """(group, version, rest) for /api/v1/... and /apis/<group>/<version>/..."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        return "", parts[1], parts[2:]
    if len(parts) >= 3 and parts[0] == "apis":
        return parts[1], parts[2], parts[3:]
    raise _not_found(path)


def resolve(path: str) -> Target:
    group, version, rest = parse(path)
    if not rest:
        raise _not_found(path)
    if rest[0] == "namespaces" and len(rest) >= 3:
        res = lookup(group, version, rest[2])
        if res is not None and res.namespaced and len(rest) <= 5:
            sub = rest[4] if len(rest) == 5 else None
            if sub is not None and sub not in res.subresources:
                raise _not_found(path)
            return Target(res, rest[1], rest[3] if len(rest) >= 4 else None, sub)
        if group == "" and len(rest) == 3 and rest[2] in NAMESPACES.subresources:
            return Target(NAMESPACES, None, rest[1], rest[2])
        raise _not_found(path)
    res = lookup(group, version, rest[0])
    if res is None or len(rest) > 3:
        raise _not_found(path)
    if len(rest) >= 2 and res.namespaced:
        raise _not_found(path)  # a namespaced object needs /namespaces/<ns>/ in its path
    sub = rest[2] if len(rest) == 3 else None
    if sub is not None and sub not in res.subresources:
        raise _not_found(path)
    return Target(res, None, rest[1] if len(rest) >= 2 else None, sub)


# Go's strconv.ParseBool, as the real API server parses boolean query parameters: clients differ
# (the official Python client sends "True").
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})


def query_bool(value: str | None) -> bool:
    return value in _TRUE
