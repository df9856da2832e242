"""The write verbs over HTTP (create, update, patch): decode the body as the real API server does
under ``fieldValidation`` (``fieldvalidation``), store it, and answer with the object and one
``Warning`` header per dropped or duplicate field."""
from __future__ import annotations

import json
from typing import Any, Callable

from aiohttp import web
from multidict import CIMultiDict

from localcluster.apiserver import authorization
from localcluster.apiserver import fieldvalidation as fv
from localcluster.apiserver.errors import ApiError
from localcluster.apiserver.patch import PATCH_TYPES
from localcluster.apiserver.routing import Target
from localcluster.apiserver.store import Store


DRY_RUN_VALUES = ("All",)


def dry_run(values: list[str], options_kind: str) -> bool:
    """The ``dryRun`` option (query parameter; DeleteOptions body too): empty → a real write,
    ["All"] → every stage but storage; anything else is refused as the real API server's
    ValidateDryRun refuses it (422 on the options object)."""
    unsupported = [v for v in values if v not in DRY_RUN_VALUES]
    if unsupported:
        shown = "[]string{" + ", ".join(json.dumps(v) for v in values) + "}"
        message = f'Unsupported value: {shown}: supported values: "All"'
        raise ApiError(422, "Invalid", f'{options_kind}.meta.k8s.io "" is invalid: dryRun: '
                                       f"{message}",
                       {"group": "meta.k8s.io", "kind": options_kind, "name": "",
                        "causes": [{"reason": "FieldValueNotSupported", "message": message,
                                    "field": "dryRun"}]})
    return bool(values)


def _dry_run(request: web.Request, options_kind: str) -> bool:
    return dry_run(request.query.getall("dryRun", []), options_kind)


def _response(obj: Any, status: int, warnings: list[str]) -> web.Response:
    headers: CIMultiDict[str] = CIMultiDict()
    for text in dict.fromkeys(warnings):  # the real recorder drops repeated warnings too
        headers.add("Warning", fv.warning_header(text))
    return web.Response(body=json.dumps(obj, separators=(",", ":")), status=status,
                        content_type="application/json", headers=headers)


def _stored(write: Callable[[], dict], status: int, warnings: list[str]) -> web.Response:
    """The written object; a refused write still carries the warnings found before it (the
    real server adds Warning headers as it records them, whatever the answer)."""
    try:
        return _response(write(), status, warnings)
    except ApiError as e:
        if not warnings:
            raise
        return _response(e.status(), e.code, warnings)


async def _decoded(request: web.Request) -> Any:
    raw = await request.read()
    return fv.loads(raw) if raw else None


def _checked(request: web.Request, t: Target, body: Any) -> tuple[Any, list[str]]:
    """Create and update: the body without unknown fields, and the warnings to send; Strict
    refuses the body instead."""
    mode = fv.directive(request.query.get("fieldValidation"), request.method)
    body, problems = fv.check(body, t.res.group, t.res.version, t.res.kind)
    if problems and mode == fv.STRICT:
        sent = body if isinstance(body, dict) else {}
        kind = sent.get("kind") if isinstance(sent.get("kind"), str) else None
        api_version = sent.get("apiVersion") if isinstance(sent.get("apiVersion"), str) else ""
        raise fv.decode_error(kind or t.res.kind, api_version.rpartition("/")[2] or t.res.version,
                              problems)
    return body, problems if mode == fv.WARN else []


async def create(request: web.Request, store: Store, t: Target) -> web.Response:
    dry = _dry_run(request, "CreateOptions")
    body, warnings = _checked(request, t, await _decoded(request))
    authorization.check_rbac_write(store, request.get("user"), t.res, t.namespace, None, body)
    return _stored(lambda: store.create(t.res, t.namespace, body, warnings=warnings,
                                        dry_run=dry), 201, warnings)


async def replace(request: web.Request, store: Store, t: Target) -> web.Response:
    dry = _dry_run(request, "UpdateOptions")
    body, warnings = _checked(request, t, await _decoded(request))
    authorization.check_rbac_write(store, request.get("user"), t.res, t.namespace, t.name, body)
    return _stored(lambda: store.replace(t.res, t.namespace, t.name, body, t.subresource,
                                         warnings=warnings, dry_run=dry), 200,
                   warnings)


async def patch(request: web.Request, store: Store, t: Target) -> web.Response:
    patch_type = PATCH_TYPES.get(request.content_type)
    if patch_type is None:
        raise ApiError(415, "UnsupportedMediaType",
                       f"the body of the request was in an unknown format - accepted media "
                       f"types include: {', '.join(PATCH_TYPES)}")
    dry = _dry_run(request, "PatchOptions")
    mode = fv.directive(request.query.get("fieldValidation"), "PATCH")
    # The patch itself is decoded into a map: only duplicates can be wrong in it.
    body, problems = fv.duplicates(await _decoded(request),
                                   "json patch " if patch_type == "json" else "")
    if mode == fv.IGNORE:
        problems = []
    warnings: list[str] = []

    def decode(patched: dict) -> dict:
        """The patched object as the typed decoder leaves it: without unknown fields."""
        pruned, unknown = fv.check(patched, t.res.group, t.res.version, t.res.kind)
        found = problems + ([] if mode == fv.IGNORE else unknown)
        if found and mode == fv.STRICT:
            # as the real handler shows it: the patch map (strategic) or the patched object
            shown = fv.go_format(body) if patch_type == "strategic" else json.dumps(
                patched, separators=(",", ":"), ensure_ascii=False)
            raise fv.patch_error(shown, found)
        warnings.extend(found)
        # escalation prevention sees the object as it would be stored
        authorization.check_rbac_write(store, request.get("user"), t.res, t.namespace, t.name,
                                       pruned)
        return pruned

    return _stored(lambda: store.patch(t.res, t.namespace, t.name, body, patch_type,
                                       t.subresource, decode=decode,
                                       warnings=warnings, dry_run=dry), 200, warnings)
