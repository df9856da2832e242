"""OpenAPI v3 documents, as a real API server serves them at ``/openapi/v3``: an index of
group-versions (``{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=..."}}}``)
and one document per served group-version with its paths and ``components.schemas`` named as
the real ones (``io.k8s.api.core.v1.Pod``, with ``x-kubernetes-group-version-kind``).

Built from the same Kubernetes 1.30 definitions the API server validates with (``definitions``;
JSON schema turned into OpenAPI 3.0: refs under ``#/components/schemas``, one type per schema,
int-or-string as the real documents spell it). Clients read them for what they need: kubectl
finds ``fieldValidation`` among the PATCH parameters (so it leaves validation to the server and
sends ``fieldValidation=Strict``) and the strategic-merge keys of each type. Only the verbs and
patch types the local cluster serves are listed (no server-side apply). Pure and cached.
"""
from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from localcluster.apiserver.definitions import REF_PREFIX, definitions, name_of
from localcluster.apiserver.discovery import VERSION
from localcluster.apiserver.resources import Resource, group_versions

_COMPONENTS = "#/components/schemas/"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                "application/strategic-merge-patch+json")


def doc_path(api_version: str) -> str:
    """"v1" -> "api/v1", "batch/v1" -> "apis/batch/v1" (the index keys)."""
    return f"apis/{api_version}" if "/" in api_version else f"api/{api_version}"


# --------------------------------------------------------------------------- schemas
def _convert(schema: Any, in_kind_props: bool = False) -> Any:
    """One JSON-schema node as OpenAPI 3.0 (which has no type lists and ignores $ref siblings)."""
    if isinstance(schema, list):
        return [_convert(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        ref = {"$ref": _COMPONENTS + schema["$ref"][len(REF_PREFIX):]}
        rest = {k: _convert(v) for k, v in schema.items() if k != "$ref"}
        return {"allOf": [ref], **rest} if rest else ref
    one_of = schema.get("oneOf")
    if one_of and all(isinstance(s, dict) and "type" in s and len(s) == 1 for s in one_of):
        types = {t for s in one_of for t in _types(s["type"])}
        out = {k: v for k, v in schema.items() if k != "oneOf"}
        out["type"] = "string"
        if "integer" in types:
            out["format"] = "int-or-string"
        return out
    out = {}
    for key, value in schema.items():
        if key == "type":
            out[key] = _types(value)[0] if _types(value) else value
        elif key == "additionalProperties" and value is False:
            continue  # the strict variant's closed objects: real documents do not say so
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: _property(name, sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _convert(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_convert(s) for s in value]
        else:
            out[key] = value
    return out


def _property(name: str, schema: Any) -> Any:
    out = _convert(schema)
    if name in ("apiVersion", "kind") and isinstance(out, dict):
        out.pop("enum", None)  # added by the JSON-schema conversion; absent from real documents
    return out


def _types(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [t for t in value or () if t != "null"]


def _refs(schema: Any, into: set[str]) -> None:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            name = ref[len(REF_PREFIX):]
            if name not in into:
                into.add(name)
                _refs(definitions().get(name), into)
        for value in schema.values():
            _refs(value, into)
    elif isinstance(schema, list):
        for value in schema:
            _refs(value, into)


def _closure(roots: list[str]) -> list[str]:
    names = set(roots)
    for root in roots:
        _refs(definitions().get(root), names)
    return sorted(n for n in names if n in definitions())


# --------------------------------------------------------------------------- paths
def _op_prefix(res: Resource) -> str:
    """"Core", "Batch", "NetworkingV1" style parts of the real operationIds."""
    if not res.group:
        return f"CoreV{res.version[1:]}"
    parts = res.group.removesuffix(".k8s.io").split(".")
    return "".join(p[:1].upper() + p[1:] for p in parts) + res.version[:1].upper() + \
        res.version[1:]


def _tag(res: Resource) -> str:
    """"core_v1", "batch_v1", "rbacAuthorization_v1": the real documents' tags."""
    if not res.group:
        return f"core_{res.version}"
    parts = res.group.removesuffix(".k8s.io").split(".")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:]) + f"_{res.version}"


def _param(name: str, where: str, kind: str, about: str, required: bool = False) -> dict:
    p = {"name": name, "in": where, "description": about, "schema": {"type": kind}}
    if required:
        p["required"] = True
    return p


_PRETTY = _param("pretty", "query", "string", "pretty-print the output when 'true'")
_DRY_RUN = _param("dryRun", "query", "string", "'All': process every stage but do not persist")
_MANAGER = _param("fieldManager", "query", "string", "name of the actor making the change")
_FIELD_VALIDATION = _param(
    "fieldValidation", "query", "string",
    "how to treat unknown or duplicate fields in the body: Ignore (drop them silently), Warn "
    "(drop them and answer with a Warning header for each; the default) or Strict (refuse the "
    "request)")
_LIST = [_param(n, "query", t, d) for n, t, d in (
    ("allowWatchBookmarks", "boolean", "ask a watch for BOOKMARK events"),
    ("continue", "string", "continue a chunked list"),
    ("fieldSelector", "string", "select objects by their fields"),
    ("labelSelector", "string", "select objects by their labels"),
    ("limit", "integer", "at most this many objects"),
    ("resourceVersion", "string", "list or watch from this resourceVersion"),
    ("resourceVersionMatch", "string", "how resourceVersion applies to a list"),
    ("sendInitialEvents", "boolean", "start a watch with the current objects"),
    ("timeoutSeconds", "integer", "end a list or watch after this long"),
    ("watch", "boolean", "watch for changes instead of listing"))]
_DELETE = [_param(n, "query", t, d) for n, t, d in (
    ("gracePeriodSeconds", "integer", "seconds before the object is deleted"),
    ("orphanDependents", "boolean", "deprecated: use propagationPolicy"),
    ("propagationPolicy", "string", "Orphan, Background or Foreground"))]


def _content(ref: str, types: tuple[str, ...] = ("application/json", "application/yaml")) -> dict:
    return {t: {"schema": {"$ref": _COMPONENTS + ref}} for t in types}


def _op(res: Resource, action: str, op_id: str, about: str, returns: str,
        params: list[dict] | None = None, body: dict | None = None,
        codes: tuple[str, ...] = ("200",)) -> dict:
    responses = {c: {"description": {"200": "OK", "201": "Created", "202": "Accepted"}[c],
                     "content": _content(returns)} for c in codes}
    responses["401"] = {"description": "Unauthorized"}
    op: dict[str, Any] = {"description": about, "operationId": op_id,
                          "tags": [_tag(res)], "responses": responses,
                          "x-kubernetes-action": action,
                          "x-kubernetes-group-version-kind": {"group": res.group,
                                                               "kind": res.kind,
                                                               "version": res.version}}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"content": body, "required": True}
    return op


def _paths(res: Resource, kind_def: str) -> dict[str, dict]:
    base = "/api/" + res.version if not res.group else f"/apis/{res.group}/{res.version}"
    scope = "Namespaced" if res.namespaced else ""
    pre = _op_prefix(res)
    name = f"{pre}{scope}{res.kind}"
    list_def = name_of(res.group, res.version, res.list_kind) or kind_def
    status, delete_opts, patch = _META + "Status", _META + "DeleteOptions", _META + "Patch"
    write = [_DRY_RUN, _MANAGER, _FIELD_VALIDATION]
    ns = [_param("namespace", "path", "string", "the object's namespace", True)] \
        if res.namespaced else []
    item_params = [_param("name", "path", "string", f"name of the {res.kind}", True), *ns, _PRETTY]
    collection = f"{base}/namespaces/{{namespace}}/{res.plural}" if res.namespaced \
        else f"{base}/{res.plural}"
    paths: dict[str, dict] = {
        collection: {
            "parameters": [*ns, _PRETTY],
            "get": _op(res, "list", f"list{name}", f"list or watch {res.kind}s",
                       list_def, _LIST),
            "post": _op(res, "post", f"create{name}", f"create a {res.kind}", kind_def,
                        write, {"*/*": {"schema": {"$ref": _COMPONENTS + kind_def}}},
                        ("200", "201", "202")),
            "delete": _op(res, "deletecollection", f"delete{pre}Collection{scope}"
                          f"{res.kind}", f"delete a collection of {res.kind}s", status,
                          [*_LIST, _DRY_RUN, *_DELETE],
                          {"*/*": {"schema": {"$ref": _COMPONENTS + delete_opts}}}),
        },
        f"{collection}/{{name}}": {
            "parameters": item_params,
            "get": _op(res, "get", f"read{name}", f"read the {res.kind}", kind_def),
            "put": _op(res, "put", f"replace{name}", f"replace the {res.kind}", kind_def,
                       write, {"*/*": {"schema": {"$ref": _COMPONENTS + kind_def}}},
                       ("200", "201")),
            "patch": _op(res, "patch", f"patch{name}", f"partially update the "
                         f"{res.kind}", kind_def,
                         [*write, _param("force", "query", "boolean", "for apply patches")],
                         {t: {"schema": {"$ref": _COMPONENTS + patch}} for t in _PATCH_TYPES},
                         ("200", "201")),
            "delete": _op(res, "delete", f"delete{name}", f"delete the {res.kind}",
                          status, [_DRY_RUN, *_DELETE],
                          {"*/*": {"schema": {"$ref": _COMPONENTS + delete_opts}}},
                          ("200", "202")),
        },
    }
    if res.namespaced:
        paths[f"{base}/{res.plural}"] = {"parameters": [_PRETTY], "get": _op(
            res, "list", f"list{pre}{res.kind}ForAllNamespaces",
            f"list or watch {res.kind}s in every namespace", list_def, _LIST)}
    if "status" in res.subresources:
        item = paths[f"{collection}/{{name}}"]
        paths[f"{collection}/{{name}}/status"] = {
            "parameters": item_params,
            "get": dict(item["get"], operationId=f"read{name}Status",
                        description=f"read the status of the {res.kind}"),
            "put": dict(item["put"], operationId=f"replace{name}Status",
                        description=f"replace the status of the {res.kind}"),
            "patch": dict(item["patch"], operationId=f"patch{name}Status",
                          description=f"partially update the status of the {res.kind}"),
        }
    if "log" in res.subresources:
        log_op = _op(res, "get", f"read{name}Log", f"read the {res.kind}'s log",
                     kind_def, [_param(n, "query", t, d) for n, t, d in (
                         ("container", "string", "the container to read"),
                         ("follow", "boolean", "stream the log"),
                         ("limitBytes", "integer", "at most this many bytes"),
                         ("previous", "boolean", "the previous instance's log"),
                         ("sinceSeconds", "integer", "only this recent"),
                         ("tailLines", "integer", "only the last lines"),
                         ("timestamps", "boolean", "prefix each line with its time"))])
        log_op["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
        paths[f"{collection}/{{name}}/log"] = {"parameters": item_params, "get": log_op}
    return paths


# --------------------------------------------------------------------------- documents
def document(api_version: str) -> dict | None:
    """The OpenAPI v3 document of one served group-version; None if not served."""
    resources = group_versions().get(api_version)
    if resources is None:
        return None
    paths: dict[str, dict] = {}
    roots = [_META + n for n in ("Status", "DeleteOptions", "Patch", "WatchEvent")]
    for res in resources:
        kind_def = name_of(res.group, res.version, res.kind)
        if kind_def is None:
            continue
        roots.append(kind_def)
        list_def = name_of(res.group, res.version, res.list_kind)
        if list_def:
            roots.append(list_def)
        paths.update(_paths(res, kind_def))
    schemas = {n: _convert(definitions()[n]) for n in _closure(roots)}
    return {"openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]},
            "paths": dict(sorted(paths.items())),
            "components": {"schemas": schemas}}


@functools.lru_cache(maxsize=None)
def serialized(path: str) -> tuple[bytes, str] | None:
    """(JSON bytes, hash) of the document at an index path ("api/v1"); None if there is none.
    The hash, as the real server's, is the upper-case hex SHA-512 of the bytes."""
    for api_version in group_versions():
        if doc_path(api_version) == path:
            data = json.dumps(document(api_version), separators=(",", ":")).encode()
            return data, hashlib.sha512(data).hexdigest().upper()
    return None


def index() -> dict:
    paths = {}
    for api_version in group_versions():
        path = doc_path(api_version)
        _, digest = serialized(path)
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}
