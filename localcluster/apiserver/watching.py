"""The watch stream: JSON lines of {"type", "object"} over a chunked HTTP response."""
from __future__ import annotations

import asyncio
import json
import logging
import time

from aiohttp import web

from localcluster.apiserver.routing import query_bool
from localcluster.apiserver.errors import ApiError, Gone
from localcluster.apiserver.faults import Faults
from localcluster.apiserver.store import Store

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 1800.0  # the real API server's min-request-timeout
BOOKMARK_INTERVAL = 60.0
_LIVENESS = 5.0  # how often an idle watch checks that its client is still there


def _line(event_type: str, obj: dict) -> bytes:
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"


async def _start(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                   "Cache-Control": "no-cache, private"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    return resp


async def serve_watch(request: web.Request, store: Store, faults: Faults, target,
                      bookmark_interval: float = BOOKMARK_INTERVAL) -> web.StreamResponse:
    q = request.query
    rv = q.get("resourceVersion")
    try:
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else DEFAULT_TIMEOUT
    except ValueError:
        raise ApiError(400, "BadRequest", "timeoutSeconds must be a number") from None
    bookmarks = query_bool(q.get("allowWatchBookmarks"))
    if "sendInitialEvents" in q:
        # a 1.30 server has the WatchList feature gate off and refuses streaming lists, which
        # makes newer clients (kubectl >= 1.35) fall back to list, then watch
        raise ApiError(422, "Invalid", "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: "
                       "Forbidden: sendInitialEvents is forbidden for watch unless the WatchList "
                       "feature gate is enabled",
                       {"kind": "ListOptions", "group": "meta.k8s.io",
                        "causes": [{"reason": "FieldValueForbidden",
                                    "message": "Forbidden: sendInitialEvents is forbidden for "
                                               "watch unless the WatchList feature gate is enabled",
                                    "field": "sendInitialEvents"}]})
    try:
        if faults.take_expire():
            raise Gone(f"too old resource version: {rv or 0} ({store.resource_version})")
        watch = store.watch(target.res, target.namespace, rv, q.get("labelSelector"),
                            q.get("fieldSelector"))
    except Gone as e:
        # The real server answers 200 and one ERROR event carrying the 410 Status.
        resp = await _start(request)
        await resp.write(_line("ERROR", e.status()))
        await resp.write_eof()
        return resp
    cut_after = faults.config.watch_cut_after
    cut_mode = faults.config.watch_cut_mode
    resp = await _start(request)
    deadline = time.monotonic() + timeout
    last_bookmark = time.monotonic()
    sent = 0
    it = watch.__aiter__()
    try:
        while True:
            if cut_after is not None and sent >= cut_after:
                if cut_mode == "reset" and request.transport is not None:
                    request.transport.abort()
                    return resp
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wait = min(remaining, bookmark_interval if bookmarks else remaining, _LIVENESS)
            try:
                event_type, obj = await asyncio.wait_for(it.__anext__(), wait)
            except asyncio.TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    return resp  # the client went away
                if bookmarks and time.monotonic() >= last_bookmark + bookmark_interval:
                    last_bookmark = time.monotonic()
                    await resp.write(_line("BOOKMARK", {
                        "kind": target.res.kind, "apiVersion": target.res.api_version,
                        "metadata": {"resourceVersion": store.resource_version}}))
                continue
            except StopAsyncIteration:
                break  # the store closed the watch (shutdown)
            await resp.write(_line(event_type, obj))
            sent += 1
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client went away
    finally:
        watch.close()
    return resp
