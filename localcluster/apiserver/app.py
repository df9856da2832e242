"""aiohttp application: auth, metrics, faults, error translation and the REST verbs."""
from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from localcluster import podlogs
from localcluster.apiserver import discovery, routing, watching
from localcluster.errors import ApiError, bad_request
from localcluster.faults import REASONS, FaultConfigError, Faults
from localcluster.metrics import Metrics
from localcluster.patch import PATCH_TYPES
from localcluster.resources import PODS
from localcluster.store import Store

log = logging.getLogger(__name__)

STORE = web.AppKey("store", Store)
SETTINGS = web.AppKey("settings", object)
METRICS = web.AppKey("metrics", Metrics)
FAULTS = web.AppKey("faults", Faults)


@dataclass
class ApiSettings:
    token: str
    state_dir: Path | None = None
    bookmark_interval: float = watching.BOOKMARK_INTERVAL
    server_address: str = "127.0.0.1:0"
    extra: dict[str, Any] = field(default_factory=dict)


def status_response(err: ApiError) -> web.Response:
    headers = {"Retry-After": "1"} if err.code == 429 else None
    return web.json_response(err.status(), status=err.code, headers=headers)


def _verb(request: web.Request, target: routing.Target | None) -> str:
    m = request.method
    if m == "GET":
        if target is None or target.name is not None:
            return "get"
        return "watch" if request.query.get("watch") in ("true", "1") else "list"
    if m == "DELETE":
        return "delete" if target is None or target.name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(m, m.lower())


@web.middleware
async def api_middleware(request: web.Request, handler):
    app = request.app
    settings: ApiSettings = app[SETTINGS]
    auth = request.headers.get("Authorization", "")
    expected = f"Bearer {settings.token}"
    if not hmac.compare_digest(auth.encode(), expected.encode()):
        return status_response(ApiError(401, "Unauthorized", "Unauthorized"))
    if request.path.startswith("/localcluster/"):
        return await handler(request)
    target = None
    try:
        if request.path.startswith(("/api/", "/apis/")):
            try:
                target = routing.resolve(request.path)
            except ApiError:
                target = None
        verb = _verb(request, target)
        app[METRICS].count(verb, target.metric_resource if target else request.path)
        code = app[FAULTS].pick_error(verb)
        if code is not None:
            raise ApiError(code, REASONS[code], f"injected fault ({code})")
        request["target"] = target
        return await handler(request)
    except ApiError as e:
        return status_response(e)
    except web.HTTPException as e:
        if e.status == 405:
            return status_response(ApiError(405, "MethodNotAllowed",
                                            f"the server does not allow this method on the "
                                            f"requested resource ({request.method})"))
        if e.status == 404:
            return status_response(ApiError(404, "NotFound", "the server could not find the "
                                            f"requested resource ({request.path})"))
        raise


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"the request body is not valid JSON: {e}") from e


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(obj, separators=(",", ":")), status=status,
                        content_type="application/json")


# ------------------------------------------------------------------------ discovery routes
async def version(request: web.Request) -> web.Response:
    return _json(discovery.VERSION)


async def core_versions(request: web.Request) -> web.Response:
    return _json(discovery.core_versions(request.app[SETTINGS].server_address))


async def groups(request: web.Request) -> web.Response:
    return _json(discovery.group_list())


async def api_v1(request: web.Request) -> web.Response:
    return _json(discovery.resource_list("v1"))


async def apis_group(request: web.Request) -> web.Response:
    doc = discovery.group(request.match_info["group"])
    if doc is None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return _json(doc)


async def apis_group_version(request: web.Request) -> web.Response:
    m = request.match_info
    doc = discovery.resource_list(f"{m['group']}/{m['version']}")
    if doc is None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return _json(doc)


# ------------------------------------------------------------------------ resource routes
def _target(request: web.Request) -> routing.Target:
    target = request.get("target") or routing.resolve(request.path)
    return target


async def resource(request: web.Request) -> web.StreamResponse:
    t = _target(request)
    store = request.app[STORE]
    q = request.query
    m = request.method
    if t.name is None:
        if m == "GET":
            if q.get("watch") in ("true", "1"):
                return await watching.serve_watch(request, store, request.app[FAULTS], t,
                                                  request.app[SETTINGS].bookmark_interval)
            items, rv = store.list(t.res, t.namespace, q.get("labelSelector"),
                                   q.get("fieldSelector"))
            return _json({"kind": t.res.list_kind, "apiVersion": t.res.api_version,
                          "metadata": {"resourceVersion": rv}, "items": items})
        if m == "POST":
            if t.res.namespaced and t.namespace is None:
                raise ApiError(405, "MethodNotAllowed", "create needs a namespace in the path")
            body = await _body(request)
            return _json(store.create(t.res, t.namespace, body), 201)
        if m == "DELETE":
            return await _delete_collection(request, t)
        raise ApiError(405, "MethodNotAllowed", f"{m} is not allowed on a collection")
    if m == "GET":
        if t.subresource == "log":
            return await _pod_log(request, t)
        return _json(store.get(t.res, t.namespace, t.name))
    if m == "PUT":
        body = await _body(request)
        return _json(store.replace(t.res, t.namespace, t.name, body, t.subresource))
    if m == "PATCH":
        ctype = request.content_type
        patch_type = PATCH_TYPES.get(ctype)
        if patch_type is None:
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media "
                           f"types include: {', '.join(PATCH_TYPES)}")
        body = await _body(request)
        return _json(store.patch(t.res, t.namespace, t.name, body, patch_type, t.subresource))
    if m == "DELETE":
        if t.subresource:
            raise ApiError(405, "MethodNotAllowed", "delete is not allowed on a subresource")
        opts = await _delete_options(request)
        obj = store.delete(t.res, t.namespace, t.name, **opts)
        if store.try_get(t.res, t.namespace, t.name) is not None or t.res == PODS:
            return _json(obj)
        details = {"name": t.name, "kind": t.res.plural, "uid": obj["metadata"]["uid"]}
        if t.res.group:
            details["group"] = t.res.group
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {},
                      "status": "Success", "details": details})
    raise ApiError(405, "MethodNotAllowed", f"{m} is not allowed")


async def _delete_options(request: web.Request) -> dict:
    body = await _body(request) or {}
    if not isinstance(body, dict):
        raise bad_request("DeleteOptions must be a JSON object")
    q = request.query
    propagation = body.get("propagationPolicy") or q.get("propagationPolicy")
    orphan = body.get("orphanDependents", q.get("orphanDependents"))
    if propagation is None and orphan is not None:
        propagation = "Orphan" if orphan in (True, "true") else "Background"
    grace = body.get("gracePeriodSeconds", q.get("gracePeriodSeconds"))
    try:
        grace = int(grace) if grace is not None else None
    except ValueError:
        raise bad_request("gracePeriodSeconds must be an integer") from None
    pre = body.get("preconditions") or {}
    return {"propagation": propagation, "grace_period_seconds": grace,
            "preconditions": {k: v for k, v in pre.items() if v} or None}


async def _delete_collection(request: web.Request, t: routing.Target) -> web.Response:
    store = request.app[STORE]
    opts = await _delete_options(request)
    q = request.query
    items, _ = store.list(t.res, t.namespace, q.get("labelSelector"), q.get("fieldSelector"))
    deleted = []
    for obj in items:
        try:
            deleted.append(store.delete(t.res, obj["metadata"].get("namespace"),
                                        obj["metadata"]["name"], **opts))
        except ApiError as e:
            if e.code != 404:
                raise
    return _json({"kind": t.res.list_kind, "apiVersion": t.res.api_version,
                  "metadata": {"resourceVersion": store.resource_version}, "items": deleted})


def _int_param(q, name: str) -> int | None:
    if q.get(name) in (None, ""):
        return None
    try:
        return int(q[name])
    except ValueError:
        raise bad_request(f"{name} must be an integer") from None


async def _pod_log(request: web.Request, t: routing.Target) -> web.Response:
    store = request.app[STORE]
    pod = store.get(PODS, t.namespace, t.name)
    q = request.query
    names = [c["name"] for c in pod["spec"].get("containers", [])]
    container = q.get("container")
    if not container:
        if len(names) != 1:
            raise bad_request(f"a container name must be specified for pod {t.name}, "
                              f"choose one of: [{' '.join(names)}]")
        container = names[0]
    statuses = {s["name"]: s for s in pod.get("status", {}).get("containerStatuses") or []}
    all_names = names + [c["name"] for c in pod["spec"].get("initContainers") or []]
    if container not in all_names:
        raise bad_request(f"container {container} is not valid for pod {t.name}")
    status = statuses.get(container)
    restarts = int((status or {}).get("restartCount", 0))
    if q.get("previous") in ("true", "1"):
        if restarts == 0:
            raise bad_request(f'previous terminated container "{container}" in pod '
                              f'"{t.name}" not found')
        restarts -= 1
    state_dir = request.app[SETTINGS].state_dir
    path = podlogs.log_path(state_dir, t.namespace, t.name, pod["metadata"]["uid"], container,
                            restarts) if state_dir else None
    if path is None or not path.exists():
        waiting = ((status or {}).get("state") or {}).get("waiting")
        if status is None or waiting:
            reason = (waiting or {}).get("reason", "ContainerCreating")
            raise bad_request(f'container "{container}" in pod "{t.name}" is waiting to start: '
                              f"{reason}")
        return web.Response(body=b"", content_type="text/plain")
    since = _int_param(q, "sinceSeconds")
    data = podlogs.render(path.read_bytes(), timestamps=q.get("timestamps") in ("true", "1"),
                          tail_lines=_int_param(q, "tailLines"),
                          since_time=time.time() - since if since is not None else None,
                          limit_bytes=_int_param(q, "limitBytes"))
    return web.Response(body=data, content_type="text/plain")


# ------------------------------------------------------------------------ /localcluster/*
async def get_metrics(request: web.Request) -> web.Response:
    return _json(request.app[METRICS].snapshot())


async def reset_metrics(request: web.Request) -> web.Response:
    request.app[METRICS].reset()
    return _json(request.app[METRICS].snapshot())


async def get_faults(request: web.Request) -> web.Response:
    return _json(request.app[FAULTS].to_dict())


async def put_faults(request: web.Request) -> web.Response:
    try:
        request.app[FAULTS].set(await _body(request) or {})
    except (FaultConfigError, TypeError) as e:
        return _json(ApiError(400, "BadRequest", str(e)).status(), 400)
    return _json(request.app[FAULTS].to_dict())


def make_app(store: Store, settings: ApiSettings) -> web.Application:
    app = web.Application(middlewares=[api_middleware], client_max_size=16 * 1024 * 1024)
    app[STORE] = store
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[FAULTS] = Faults()
    r = app.router
    r.add_get("/version", version)
    r.add_get("/api", core_versions)
    r.add_get("/apis", groups)
    r.add_get("/api/v1", api_v1)
    r.add_get("/apis/{group}", apis_group)
    r.add_get("/apis/{group}/{version}", apis_group_version)
    for prefix in ("/api/v1/{tail:.+}", "/apis/{group}/{version}/{tail:.+}"):
        r.add_route("*", prefix, resource)
    r.add_get("/localcluster/metrics", get_metrics)
    r.add_post("/localcluster/metrics/reset", reset_metrics)
    r.add_get("/localcluster/faults", get_faults)
    r.add_put("/localcluster/faults", put_faults)
    return app
