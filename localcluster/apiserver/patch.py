"""Patch application: JSON merge patch (RFC 7386), strategic merge patch and JSON patch
(RFC 6902).

Strategic merge follows the Kubernetes rules for the lists that have a merge key in the core
types (``_MERGE_KEYS``: containers, volumes, env, ports, ownerReferences, conditions, ...):
elements are merged by that key, ``{"$patch": "delete"}`` removes one, ``metadata.finalizers``
merges as a set and ``$deleteFromPrimitiveList/<field>`` removes values. Other lists are
replaced. ``$patch: replace`` on a map replaces it. ``$setElementOrder`` and ``$retainKeys``
directives are accepted and ignored (a simplification: element order is the old order followed
by new elements).
"""
from __future__ import annotations

import copy
from typing import Any

from localcluster.apiserver.errors import ApiError, bad_request

PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
}


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# field name → merge key of its list elements (from the patchMergeKey tags of the core types)
_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "volumes": "name", "env": "name", "imagePullSecrets": "name", "resourceClaims": "name",
    "volumeMounts": "mountPath", "volumeDevices": "devicePath", "ownerReferences": "uid",
    "conditions": "type", "hostAliases": "ip", "topologySpreadConstraints": "topologyKey",
}
_SET_LISTS = {"finalizers"}  # lists of primitives with patchStrategy merge


def _port_key(items: list) -> str | None:
    for it in items:
        if isinstance(it, dict):
            return "containerPort" if "containerPort" in it else "port"
    return None


def strategic_merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(out.get(field), list) and isinstance(v, list):
                out[field] = [x for x in out[field] if x not in v]
            continue
        if k.startswith(("$setElementOrder/", "$retainKeys", "$patch")):
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list):
            out[k] = _merge_list(k, out.get(k), v)
        else:
            out[k] = strategic_merge(out.get(k), v)
    return out


def _merge_list(field: str, old: Any, new: list) -> list:
    if not isinstance(old, list):
        old = []
    if field in _SET_LISTS:
        return list(old) + [x for x in new if x not in old]
    key = _MERGE_KEYS.get(field) or (_port_key(new + old) if field == "ports" else None)
    if key is None or not all(isinstance(x, dict) for x in new + old):
        return [copy.deepcopy(x) for x in new if not (isinstance(x, dict)
                                                      and x.get("$patch") == "delete")]
    out = [copy.deepcopy(x) for x in old]
    for item in new:
        idx = next((i for i, o in enumerate(out) if o.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
        elif idx is None:
            out.append(strategic_merge({}, item))
        else:
            out[idx] = strategic_merge(out[idx], item)
    return out


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _parent(doc: Any, pointer: str) -> tuple[Any, str]:
    if not pointer.startswith("/"):
        raise bad_request(f"invalid JSON pointer {pointer!r}")
    tokens = [_unescape(t) for t in pointer[1:].split("/")]
    cur = doc
    for t in tokens[:-1]:
        cur = _child(cur, t, pointer)
    return cur, tokens[-1]


def _child(cur: Any, token: str, pointer: str) -> Any:
    try:
        if isinstance(cur, list):
            return cur[int(token)]
        return cur[token]
    except (KeyError, IndexError, ValueError, TypeError):
        raise ApiError(422, "Invalid", f"doc is missing path: {pointer}") from None


def _get(doc: Any, pointer: str) -> Any:
    if pointer == "":
        return doc
    parent, last = _parent(doc, pointer)
    return _child(parent, last, pointer)


def _add(doc: Any, pointer: str, value: Any) -> Any:
    if pointer == "":
        return value
    parent, last = _parent(doc, pointer)
    if isinstance(parent, list):
        idx = len(parent) if last == "-" else int(last)
        if idx > len(parent):
            raise ApiError(422, "Invalid", f"index out of range: {pointer}")
        parent.insert(idx, value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise ApiError(422, "Invalid", f"doc is missing path: {pointer}")
    return doc


def _remove(doc: Any, pointer: str) -> Any:
    parent, last = _parent(doc, pointer)
    try:
        if isinstance(parent, list):
            del parent[int(last)]
        else:
            del parent[last]
    except (KeyError, IndexError, ValueError, TypeError):
        raise ApiError(422, "Invalid", f"doc is missing path: {pointer}") from None
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid json patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = _add(_remove(doc, path), path, copy.deepcopy(op.get("value"))) if path \
                else copy.deepcopy(op.get("value"))
        elif kind in ("move", "copy"):
            value = copy.deepcopy(_get(doc, op["from"]))
            if kind == "move":
                doc = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise ApiError(422, "Invalid", f"testing value {path} failed")
        else:
            raise bad_request(f"unknown json patch operation {kind!r}")
    return doc


def apply_patch(obj: dict, patch: Any, patch_type: str) -> dict:
    """Return a patched copy of obj. patch_type: "merge" | "strategic" | "json"."""
    if patch_type in ("merge", "strategic"):
        if not isinstance(patch, dict):
            raise bad_request("merge patch body must be a JSON object")
        if patch_type == "strategic":
            return strategic_merge(copy.deepcopy(obj), patch)
        return merge_patch(copy.deepcopy(obj), patch)
    if patch_type == "json":
        out = json_patch(obj, patch)
        if not isinstance(out, dict):
            raise bad_request("json patch result is not an object")
        return out
    raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {patch_type!r}")
