"""The gateway's HTTP application: public routes, errors, background watchers."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from gateway.config import Config
from gateway.control import ControlClient, ControlUnavailable
from gateway.dispatch import Dispatcher
from gateway.errors import BadRequest, FunctionNotFound, GatewayError, Unauthorized, Unavailable
from gateway.routes import Routes
from gateway.upstream import Container

log = logging.getLogger("hearth.gateway")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# Headers that describe one hop, not the message: never relayed.
HOP_HEADERS = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
    "proxy-authorization", "proxy-authenticate", "content-length", "host",
})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gateway:
    """The parts one gateway process shares across requests."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.control = ControlClient(config.control_url, config.control_token)
        self.routes = Routes(config, self.control)
        self.dispatcher = Dispatcher(config, self.routes, self.demand, self.suspect)
        self._report_now = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    def demand(self, name: str) -> None:
        self._report_now.set()

    def suspect(self, container: Container) -> None:
        task = asyncio.create_task(self.control.post(f"/v1/containers/{container.key}/suspect", {}))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def load(self) -> dict[str, dict[str, int]]:
        names = set(self.dispatcher.inflight) | set(self.routes.queues)
        return {
            n: {
                "inflight": self.dispatcher.inflight.get(n, 0) - len(self.routes.queues.get(n, ())),
                "queued": len(self.routes.queues.get(n, ())),
            }
            for n in names
        }

    async def report_loop(self) -> None:
        """Report load every interval, and at once when a queue forms."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_now.wait(), self.config.report_interval_s)
            self._report_now.clear()
            await self.control.post("/v1/load", {"functions": self.load()})


GATEWAY_KEY = web.AppKey("gateway", Gateway)


def error_response(status: int, code: str, message: str, retry_after_s: int | None = None) -> web.Response:
    resp = web.Response(
        body=orjson.dumps({"error": {"code": code, "message": message}}),
        status=status, content_type="application/json",
    )
    if retry_after_s is not None:
        resp.headers["Retry-After"] = str(retry_after_s)
    return resp


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return error_response(exc.status, exc.code, str(exc), exc.retry_after_s)
    except ControlUnavailable as exc:
        return error_response(503, "pool_manager_unavailable", str(exc), 1)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(413, "payload_too_large", exc.text or "request body too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = (exc.reason or "error").lower().replace(" ", "_")
        return error_response(exc.status, code, exc.reason or "error")


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise BadRequest(f"invalid function name {name!r}: use [a-z0-9][a-z0-9-]{{0,62}}")
    return name


def check_admin(request: web.Request) -> None:
    token = request.app[GATEWAY_KEY].config.admin_token
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise Unauthorized("missing or wrong admin token (Authorization: Bearer ...)")


async def invoke(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY_KEY]
    name = check_name(request.match_info["name"])
    if name not in gw.routes.functions:
        if not gw.routes.ready.is_set():
            raise Unavailable("the routing table is not loaded yet", retry_after_s=1)
        raise FunctionNotFound(f"no function named {name!r}")
    body = await request.read()
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    meta = {
        "op": "invoke",
        "id": request_id,
        "call_id": None,
        "method": request.method,
        "path": "/" + request.match_info.get("path", ""),
        "query": request.query_string,
        "headers": [[k, v] for k, v in request.headers.items() if k.lower() not in HOP_HEADERS],
    }
    result = await gw.dispatcher.invoke(name, meta, body)
    resp = web.Response(status=int(result.meta.get("status", 502)), body=result.body)
    for key, value in result.meta.get("headers") or ():
        if key.lower() not in HOP_HEADERS:
            resp.headers.add(key, value)
    resp.headers["X-Request-Id"] = request_id
    resp.headers["X-Hearth-Container"] = result.container.key
    resp.headers["X-Hearth-Start"] = str(result.meta.get("start", "warm"))
    return resp


async def admin_functions(request: web.Request) -> web.Response:
    """``/system/functions[/{name}]``: checked here, carried out by the pool manager."""
    check_admin(request)
    gw = request.app[GATEWAY_KEY]
    name = request.match_info.get("name")
    path = "/v1/functions" if name is None else f"/v1/functions/{check_name(name)}"
    body = None
    if request.method == "PUT":
        body = await request.read()
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise BadRequest("request body must be a JSON object")
    status, out, content_type = await gw.control.forward(request.method, path, body)
    if request.method in ("PUT", "DELETE") and status < 300:
        # Answer once this gateway routes the change, so deploy-then-invoke just works.
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, ValueError):
            await gw.routes.wait_version(int(orjson.loads(out).get("routes_version", 0)), 5.0)
    return web.Response(status=status, body=out, content_type=content_type or "application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    if not gw.routes.ready.is_set():
        return error_response(503, "not_ready", "waiting for the pool manager's routing table", 1)
    return web.json_response({"ok": True, "routes_version": gw.routes.version})


async def background(app: web.Application) -> AsyncIterator[None]:
    gw = app[GATEWAY_KEY]
    tasks = [asyncio.create_task(gw.routes.watch()), asyncio.create_task(gw.report_loop())]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await gw.control.close()


def make_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=config.max_body_bytes)
    app[GATEWAY_KEY] = Gateway(config)
    app.cleanup_ctx.append(background)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_route("*", "/function/{name}", invoke)
    app.router.add_route("*", "/function/{name}/{path:.*}", invoke)
    app.router.add_get("/system/functions", admin_functions)
    for method in ("GET", "PUT", "DELETE"):
        app.router.add_route(method, "/system/functions/{name}", admin_functions)
    return app
