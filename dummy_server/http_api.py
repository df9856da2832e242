"""HTTP API (CONTRACTS §3): researchers with their key, algorithm containers with their token."""
from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from . import __version__
from .errors import BadRequest, NotFound, ServerError, TooLarge
from .service import Service
from .sockets import SocketHandlers
from .validation import is_id, parse_task_request

log = logging.getLogger(__name__)
SERVICE = web.AppKey("service", Service)
SOCKETS = web.AppKey("sockets", SocketHandlers)
# Added by a node's proxy (dummy_proxy.proxy uses the same name): the node's API key, which binds
# a container token to the proxy it came through (CONTRACTS §3, §4).
NODE_KEY_HEADER = "X-V6-Node-Key"
# Runs in these states have not started yet as far as the server knows.
STARTING = frozenset({"pending", "initializing"})
PARENT_POLL_SECONDS = 0.05


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except ServerError as e:
        return _error(e.status, str(e))
    except web.HTTPException as e:
        if e.status >= 400:
            return _error(e.status, e.reason)
        raise


def _principal(request: web.Request):
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    bearer = value.strip() if scheme.lower() == "bearer" else None
    return request.app[SERVICE].authenticate(bearer, request.headers.get(NODE_KEY_HEADER))


async def _wait_for_active_parent(request: web.Request, who) -> None:
    """An algorithm may ask for subtasks before the node's "active" status change has reached
    us: give the parent run a bounded time to get there (the status arrives over Socket.IO in
    this process, so a cheap store read per tick is enough)."""
    service = request.app[SERVICE]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + service.config.subtask_parent_wait_seconds
    while service.parent_run_status(who) in STARTING and loop.time() < deadline:
        await asyncio.sleep(PARENT_POLL_SECONDS)


def _int_id(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{what} id must be an integer, got {text!r}") from None
    if not is_id(value):
        raise NotFound(f"{what} {text} not found")
    return value


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def version(request: web.Request) -> web.Response:
    _principal(request)
    return web.json_response({"version": __version__})


async def _json_body(request: web.Request):
    limit = request.app[SERVICE].config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"request body larger than {limit} bytes")
    try:
        raw = await request.read()  # client_max_size stops chunked bodies over the limit
    except web.HTTPRequestEntityTooLarge as e:
        raise TooLarge(f"request body larger than {limit} bytes") from e
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from e
    except RecursionError as e:  # "[[[[…" deeper than the parser's stack (was a 500)
        raise BadRequest("request body is not valid JSON: nested too deeply") from e
    return body


async def create_task(request: web.Request) -> web.Response:
    who = _principal(request)
    service = request.app[SERVICE]
    req = parse_task_request(await _json_body(request), service.config.node_ids)
    await _wait_for_active_parent(request, who)
    created, messages = service.create_task(who, req)
    await request.app[SOCKETS].send(messages)
    return web.json_response(created, status=201)


async def explain_task(request: web.Request) -> web.Response:
    """A dry run: each target node says what it would do with the task; nothing is created."""
    who = _principal(request)
    service = request.app[SERVICE]
    req = parse_task_request(await _json_body(request), service.config.node_ids)
    answers = await request.app[SOCKETS].explain(service.explain_commands(who, req))
    return web.json_response({"nodes": answers})


async def get_task(request: web.Request) -> web.Response:
    who = _principal(request)
    task_id = _int_id(request.match_info["id"], "task")
    return web.json_response(request.app[SERVICE].get_task(who, task_id))


async def kill_task(request: web.Request) -> web.Response:
    who = _principal(request)
    task_id = _int_id(request.match_info["id"], "task")
    nodes = request.app[SERVICE].kill_targets(who, task_id)
    answers = await request.app[SOCKETS].kill(task_id, nodes)
    await request.app[SOCKETS].send(request.app[SERVICE].kill_confirmed(task_id, answers))
    return web.json_response({"task_id": task_id, "nodes": answers})


async def get_run(request: web.Request) -> web.Response:
    who = _principal(request)
    run_id = _int_id(request.match_info["id"], "run")
    node_id = request.query.get("node_id")
    return web.json_response(request.app[SERVICE].get_run(who, run_id, node_id))


async def list_nodes(request: web.Request) -> web.Response:
    who = _principal(request)
    return web.json_response({"nodes": request.app[SERVICE].nodes(who)})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/version", version)
    app.router.add_post("/api/task", create_task)
    app.router.add_post("/api/explain", explain_task)
    app.router.add_get("/api/task/{id}", get_task)
    app.router.add_post("/api/task/{id}/kill", kill_task)
    app.router.add_get("/api/run/{id}", get_run)
    app.router.add_get("/api/node", list_nodes)
