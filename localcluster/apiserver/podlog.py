"""Pod logs over the API (GET pods/NAME/log: tailLines, limitBytes, sinceSeconds, timestamps,
previous, follow), read through the kubelet's log reader as a real API server reaches the kubelet."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from localcluster.apiserver import routing
from localcluster.apiserver.errors import ApiError, bad_request
from localcluster.apiserver.faults import REASONS
from localcluster.apiserver.resources import PODS
from localcluster.apiserver.store import Store


def _int_param(q, name: str) -> int | None:
    if q.get(name) in (None, ""):
        return None
    try:
        return int(q[name])
    except ValueError:
        raise bad_request(f"{name} must be an integer") from None


async def serve(request: web.Request, t: routing.Target, store: Store, kubelet_logs: Any,
                state_dir: Path | None) -> web.StreamResponse:
    """GET pods/NAME/log. kubelet_logs: the kubelet's log reader (None: no logs here)."""
    if kubelet_logs is None:
        raise ApiError(503, "ServiceUnavailable", "pod logs are not available")
    pod = store.get(PODS, t.namespace, t.name)
    q = request.query
    if state_dir is None:
        raise ApiError(503, "ServiceUnavailable", "pod logs are not available")
    opts = {"tail_lines": _int_param(q, "tailLines"), "limit_bytes": _int_param(q, "limitBytes"),
            "timestamps": routing.query_bool(q.get("timestamps"))}
    previous = routing.query_bool(q.get("previous"))
    try:
        if routing.query_bool(q.get("follow")) and not previous:
            path = kubelet_logs.resolve_log_path(state_dir, pod, q.get("container"))
            return await _follow_log(request, t, store, path, q.get("container"), kubelet_logs,
                                     opts)
        text = kubelet_logs.read_log(state_dir, pod, q.get("container"), previous=previous,
                                     since_seconds=_int_param(q, "sinceSeconds"), **opts)
    except kubelet_logs.LogError as e:
        raise ApiError(e.code, REASONS.get(e.code, "BadRequest"), e.message) from e
    return web.Response(text=text, content_type="text/plain")


def _running(pod: dict | None, container: str | None) -> bool:
    if pod is None:
        return False
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if container in (None, cs.get("name")):
            return "running" in (cs.get("state") or {})
    return False


async def _follow_log(request: web.Request, t: routing.Target, store: Store, path: Path,
                      container: str | None, kubelet_logs, opts: dict) -> web.StreamResponse:
    """Stream the log while the container runs (follow=true)."""
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    offset = 0
    first = True
    while True:
        data = path.read_bytes()[offset:] if path.exists() else b""
        complete = data[:data.rfind(b"\n") + 1]
        if complete:
            offset += len(complete)
            text = kubelet_logs.format_records(
                complete, timestamps=opts["timestamps"],
                tail_lines=opts["tail_lines"] if first else None)
            await resp.write(text.encode())
        first = False
        if not complete and not _running(store.try_get(PODS, t.namespace, t.name), container):
            break
        await asyncio.sleep(0.2)
    await resp.write_eof()
    return resp
