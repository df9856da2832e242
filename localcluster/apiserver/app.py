"""aiohttp application: auth, metrics, faults, error translation and the REST verbs."""
from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aiohttp import web
from multidict import CIMultiDict

from localcluster.apiserver import (authorization, binding, discovery, openapi, podlog, rbac,
                                    requestinfo, routing, tables, watching, writes)
from localcluster.apiserver.errors import ApiError, bad_request
from localcluster.apiserver.faults import REASONS, FaultConfigError, Faults
from localcluster.apiserver.metrics import Metrics
from localcluster.apiserver.resources import SERVICEACCOUNTS
from localcluster.apiserver.store import Store

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
    # Other bearer tokens the Kubernetes API accepts (service accounts, localcluster.apiserver.incluster):
    # Authorization header -> user name, or None. Never for /localcluster/*. Their requests are
    # authorized by RBAC (localcluster.apiserver.authorization); the admin token's are not.
    authenticate: Callable[[str], str | None] | None = None
    # TokenRequest (serviceaccounts/<name>/token): (namespace, name, body) -> TokenRequest;
    # None: not served (503), as without in-cluster access (plain http).
    request_token: Callable[[str, str, Any], dict] | None = None
    # Where pod logs come from: the kubelet's log reader (localcluster.kubelet.logs), passed in
    # as a real API server reaches the kubelet; None: logs are not available (503).
    pod_logs: Any = None


def status_response(err: ApiError) -> web.Response:
    headers = CIMultiDict({"Retry-After": "1"} if err.code == 429 else {})
    return web.json_response(err.status(), status=err.code, headers=headers)


def _verb(request: web.Request, target: routing.Target | None) -> str:
    m = request.method
    if m == "GET":
        if target is None or target.name is not None:
            return "get"
        return "watch" if routing.query_bool(request.query.get("watch")) else "list"
    if m == "DELETE":
        return "delete" if target is None or target.name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(m, m.lower())


@web.middleware
async def api_middleware(request: web.Request, handler):
    app = request.app
    settings: ApiSettings = app[SETTINGS]
    auth = request.headers.get("Authorization", "")
    expected = f"Bearer {settings.token}"
    admin = hmac.compare_digest(auth.encode(), expected.encode())
    if request.path.startswith("/localcluster/"):
        if not admin:
            return status_response(ApiError(401, "Unauthorized", "Unauthorized"))
        return await handler(request)
    user = None
    if not admin:
        name = settings.authenticate(auth) if settings.authenticate is not None else None
        if not name:
            return status_response(ApiError(401, "Unauthorized", "Unauthorized"))
        user = rbac.service_account_user(name)
    request["user"] = user  # None: the admin
    target = None
    try:
        if request.path.startswith(("/api/", "/apis/")):
            try:
                target = routing.resolve(request.path)
            except ApiError:
                target = None
        verb = _verb(request, target)
        app[METRICS].count(verb, target.metric_resource if target
                           else request.path.rstrip("/") or "/")
        if user is not None:  # before routing, as the real one: no 404 tells what exists
            authorization.check(app[STORE], user,
                                requestinfo.parse(request.method, request.path, request.query))
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


async def openapi_v3_index(request: web.Request) -> web.Response:
    return _json(openapi.index())


async def openapi_v3_doc(request: web.Request) -> web.Response:
    """One group-version's document. As the real server: a URL with the current hash may be
    cached for good, an outdated hash is redirected to the current one."""
    path = request.match_info["path"]
    found = openapi.serialized(path)
    if found is None:
        raise web.HTTPNotFound()
    data, digest = found
    asked = request.query.get("hash")
    if asked and asked != digest:
        raise web.HTTPMovedPermanently(f"/openapi/v3/{path}?hash={digest}")
    headers = {"ETag": f'"{digest}"',
               "Cache-Control": "public, immutable" if asked else "no-cache, private"}
    if request.headers.get("If-None-Match") == headers["ETag"]:
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, content_type="application/json", headers=headers)


# ------------------------------------------------------------------------ resource routes
def _as_table(request: web.Request, t: routing.Target) -> bool:
    """kubectl get asks for a Table (server-side printing); given for the types tables.py
    prints, never for subresources."""
    return (t.subresource is None and tables.supports(t.res)
            and tables.wants_table(request.headers.get("Accept")))


def _target(request: web.Request) -> routing.Target:
    target = request.get("target") or routing.resolve(request.path)
    return target


def _method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed",
                    "the server does not allow this method on the requested resource")


async def _create_only(request: web.Request, t: routing.Target) -> web.Response:
    """Types that are answered, never stored (the access reviews)."""
    if t.name is not None:  # no object paths: nothing is stored
        raise ApiError(404, "NotFound", "the server could not find the requested resource "
                       f"({request.path})")
    if request.method != "POST":
        raise _method_not_allowed()
    review = authorization.REVIEWS[t.res]
    return _json(review(request.app[STORE], request.get("user"), await _body(request)), 201)


async def _token_request(request: web.Request, t: routing.Target) -> web.Response:
    if request.method != "POST":
        raise _method_not_allowed()
    request_token = request.app[SETTINGS].request_token
    if request_token is None:
        raise ApiError(503, "ServiceUnavailable", "service account tokens are not available "
                       "(the local cluster serves plain http)")
    return _json(request_token(t.namespace, t.name, await _body(request)), 201)


async def resource(request: web.Request) -> web.StreamResponse:
    t = _target(request)
    store = request.app[STORE]
    q = request.query
    m = request.method
    if t.res.verbs:
        return await _create_only(request, t)
    if t.res == SERVICEACCOUNTS and t.subresource == "token":
        return await _token_request(request, t)
    if t.name is None:
        if m == "GET":
            if routing.query_bool(q.get("watch")):
                return await watching.serve_watch(request, store, request.app[FAULTS], t,
                                                  request.app[SETTINGS].bookmark_interval)
            items, rv = store.list(t.res, t.namespace, q.get("labelSelector"),
                                   q.get("fieldSelector"))
            if _as_table(request, t):
                return _json(tables.table(t.res, items, rv, q.get("includeObject")))
            return _json({"kind": t.res.list_kind, "apiVersion": t.res.api_version,
                          "metadata": {"resourceVersion": rv}, "items": items})
        if m == "POST":
            if t.res.namespaced and t.namespace is None:
                raise ApiError(405, "MethodNotAllowed", "create needs a namespace in the path")
            return await writes.create(request, store, t)
        if m == "DELETE":
            return await _delete_collection(request, t)
        raise ApiError(405, "MethodNotAllowed", f"{m} is not allowed on a collection")
    if t.subresource == "binding":  # create-only, as the real pods/binding
        if m != "POST":
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on "
                                                    f"the requested resource ({m})")
        return _json(binding.bind(store, t.namespace, t.name, await _body(request)), 201)
    if m == "GET":
        if t.subresource == "log":
            settings = request.app[SETTINGS]
            return await podlog.serve(request, t, store, settings.pod_logs, settings.state_dir)
        obj = store.get(t.res, t.namespace, t.name)
        if _as_table(request, t):
            return _json(tables.table(t.res, [obj], obj["metadata"]["resourceVersion"],
                                      q.get("includeObject")))
        return _json(obj)
    if m == "PUT":
        return await writes.replace(request, store, t)
    if m == "PATCH":
        return await writes.patch(request, store, t)
    if m == "DELETE":
        if t.subresource:
            raise ApiError(405, "MethodNotAllowed", "delete is not allowed on a subresource")
        opts = await _delete_options(request)
        obj = store.delete(t.res, t.namespace, t.name, **opts)
        if store.try_get(t.res, t.namespace, t.name) is not None or t.res.delete_returns_object:
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
    dry = body.get("dryRun") or q.getall("dryRun", [])
    if not isinstance(dry, list) or not all(isinstance(v, str) for v in dry):
        raise bad_request("DeleteOptions dryRun must be a list of strings")
    return {"propagation": propagation, "grace_period_seconds": grace,
            "preconditions": {k: v for k, v in pre.items() if v} or None,
            "dry_run": writes.dry_run(dry, "DeleteOptions")}


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
    for path, handler in (("/version", version), ("/api", core_versions), ("/apis", groups),
                          ("/api/v1", api_v1), ("/apis/{group}", apis_group),
                          ("/apis/{group}/{version}", apis_group_version)):
        r.add_get(path, handler)
        r.add_get(path + "/", handler)  # clients ask for "/version/" too
    r.add_get("/openapi/v3", openapi_v3_index)
    r.add_get("/openapi/v3/{path:.+}", openapi_v3_doc)
    for prefix in ("/api/v1/{tail:.+}", "/apis/{group}/{version}/{tail:.+}"):
        r.add_route("*", prefix, resource)
    r.add_get("/localcluster/metrics", get_metrics)
    r.add_post("/localcluster/metrics/reset", reset_metrics)
    r.add_get("/localcluster/faults", get_faults)
    r.add_put("/localcluster/faults", put_faults)
    return app
