"""The pool manager's control API: local HTTP, token-protected, used by the gateway."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from pool_manager import health, metrics
from pool_manager.config import Config
from pool_manager.pool import Pool
from pool_manager.registry import (
    InvalidSpec,
    UnknownFunction,
    code_from_body,
    spec_from_body,
    validate_name,
)

POOL_KEY = web.AppKey("pool", Pool)
CONFIG_KEY = web.AppKey("config", Config)
# Liveness and metrics need no token: the API listens on localhost only.
PUBLIC_PATHS = frozenset({"/v1/healthz", "/metrics"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status)


@web.middleware
async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path not in PUBLIC_PATHS:
        token = request.app[CONFIG_KEY].control_token
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return error(401, "unauthorized", "missing or wrong control token")
    try:
        return await handler(request)
    except InvalidSpec as exc:
        return error(400, "invalid_request", str(exc))
    except UnknownFunction as exc:
        return error(404, "function_not_found", f"no function named {exc.args[0]!r}")
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
        raise


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidSpec(f"request body is not valid JSON: {exc}") from None


def _describe(pool: Pool, name: str) -> dict[str, Any]:
    spec = pool.registry.get(name)
    return {
        **spec.public(),
        "containers": pool.counts(name),
        "load_error": pool.load_errors.get(name),
        "scaling": pool.scaler.describe(name),
    }


async def list_functions(request: web.Request) -> web.Response:
    pool = request.app[POOL_KEY]
    return json_response({"functions": [_describe(pool, s.name) for s in pool.registry.all()]})


async def get_function(request: web.Request) -> web.Response:
    name = validate_name(request.match_info["name"])
    return json_response(_describe(request.app[POOL_KEY], name))


async def put_function(request: web.Request) -> web.Response:
    pool, config = request.app[POOL_KEY], request.app[CONFIG_KEY]
    name = validate_name(request.match_info["name"])
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise InvalidSpec("the request body must be a JSON object")
    code = code_from_body(body)
    spec = spec_from_body(name, body, code, config)
    try:
        previous = pool.registry.get(name)
    except UnknownFunction:
        previous = None
    pool.registry.put(spec, code)
    await pool.deployed(spec, previous)
    pool.publish()
    return json_response(
        {**_describe(pool, name), "routes_version": pool.routes.version}, 200 if previous else 201
    )


async def delete_function(request: web.Request) -> web.Response:
    pool = request.app[POOL_KEY]
    name = validate_name(request.match_info["name"])
    spec = pool.registry.remove(name)
    await pool.removed(name)
    return json_response(
        {"name": name, "version": spec.version, "removed": True, "routes_version": pool.routes.version}
    )


async def get_routes(request: web.Request) -> web.Response:
    pool, config = request.app[POOL_KEY], request.app[CONFIG_KEY]
    try:
        after = int(request.query.get("after", "-1"))
    except ValueError:
        raise InvalidSpec("after must be an integer version") from None
    body = await pool.routes.wait_newer(after, config.routes_poll_s)
    return web.Response(body=body, content_type="application/json")


async def get_logs(request: web.Request) -> web.Response:
    """The last lines each of a function's containers wrote, oldest first per container."""
    pool = request.app[POOL_KEY]
    name = validate_name(request.match_info["name"])
    pool.registry.get(name)
    try:
        tail = max(1, min(10_000, int(request.query.get("tail", "200"))))
    except ValueError:
        raise InvalidSpec("tail must be a whole number of lines") from None
    mine = [i for i in pool.instances.values() if i.function == name and i.id]
    chunks = await asyncio.gather(*(pool.backend.logs(i.id, tail) for i in mine))
    return json_response({
        "function": name,
        "containers": [
            {"id": i.id[:12], "state": i.state, "lines": data.decode(errors="replace").splitlines()}
            for i, data in zip(mine, chunks, strict=True)
        ],
    })


async def post_load(request: web.Request) -> web.Response:
    body = await _json_body(request)
    functions = body.get("functions") if isinstance(body, dict) else None
    if not isinstance(functions, dict):
        raise InvalidSpec("expected {\"functions\": {name: {\"inflight\": n, \"queued\": n}}}")
    demand: dict[str, float] = {}
    for name, load in functions.items():
        if isinstance(load, dict):
            try:
                demand[name] = float(load.get("inflight", 0)) + float(load.get("queued", 0))
            except (TypeError, ValueError):
                raise InvalidSpec(f"load of {name!r} must hold numbers") from None
    await request.app[POOL_KEY].report_demand(demand)
    return json_response({"ok": True})


async def post_suspect(request: web.Request) -> web.Response:
    await health.suspect(request.app[POOL_KEY], request.match_info["id"])
    return json_response({"ok": True})


async def post_retire(request: web.Request) -> web.Response:
    retired = await request.app[POOL_KEY].retire_container(request.match_info["id"])
    return json_response({"ok": retired})


async def get_metrics(request: web.Request) -> web.Response:
    return web.Response(body=metrics.exposition(), content_type="text/plain", charset="utf-8")


async def healthz(request: web.Request) -> web.Response:
    return json_response({"ok": True})


async def status(request: web.Request) -> web.Response:
    return json_response(request.app[POOL_KEY].status())


def make_app(config: Config, pool: Pool) -> web.Application:
    app = web.Application(middlewares=[errors_and_auth], client_max_size=64 << 20)
    app[POOL_KEY] = pool
    app[CONFIG_KEY] = config
    app.router.add_get("/v1/healthz", healthz)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/functions", list_functions)
    app.router.add_get("/v1/functions/{name}", get_function)
    app.router.add_put("/v1/functions/{name}", put_function)
    app.router.add_delete("/v1/functions/{name}", delete_function)
    app.router.add_get("/v1/functions/{name}/logs", get_logs)
    app.router.add_get("/v1/routes", get_routes)
    app.router.add_post("/v1/load", post_load)
    app.router.add_post("/v1/containers/{id}/suspect", post_suspect)
    app.router.add_post("/v1/containers/{id}/retire", post_retire)
    return app
