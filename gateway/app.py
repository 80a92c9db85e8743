"""The gateway's HTTP application: public routes, errors, background watchers."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from gateway import execute, metrics, openapi
from gateway.config import Config
from gateway.control import ControlClient, ControlUnavailable
from gateway.dispatch import Dispatcher
from gateway.errors import BadRequest, FunctionNotFound, GatewayError, Unauthorized, Unavailable
from gateway.routes import Routes
from gateway.upstream import Container
from hearth import logs

log = logging.getLogger("hearth.gateway")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# Headers that describe one hop, not the message: never relayed.
HOP_HEADERS = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
    "proxy-authorization", "proxy-authenticate", "content-length", "host",
})
# The shortest time between two load reports (see Gateway.report_loop).
REPORT_MIN_GAP_S = 0.05
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gateway:
    """The parts one gateway process shares across requests."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.control = ControlClient(config.control_url, config.control_token)
        self.routes = Routes(config, self.control)
        self.dispatcher = Dispatcher(config, self.routes, self.demand, self.suspect, on_retire=self.retire)
        self.access = logs.AccessLog("gateway", log.name, on=config.access_log)
        self._report_now = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    def demand(self, name: str) -> None:
        self._report_now.set()

    def suspect(self, container: Container) -> None:
        task = asyncio.create_task(self.control.post(f"/v1/containers/{container.key}/suspect", {}))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def retire(self, container: Container) -> None:
        task = asyncio.create_task(self.control.post(f"/v1/containers/{container.key}/retire", {}))
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
        """Report load every interval, and at once when a queue forms.

        At once means at most every REPORT_MIN_GAP_S: a standing queue calls
        demand() for every request it holds, and a report per request cost
        the pool manager a third of a core under load, for no news.
        """
        gap_s = min(REPORT_MIN_GAP_S, self.config.report_interval_s)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_now.wait(), self.config.report_interval_s - gap_s)
            self._report_now.clear()
            await self.control.post("/v1/load", {"functions": self.load()})
            await asyncio.sleep(gap_s)


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
        resp = error_response(exc.status, code, exc.reason or "error")
        if "Allow" in exc.headers:  # a 405 must say which methods are (RFC 9110)
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp


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
    """``/function/{name}[/{path}]``: counted, timed and logged around ``_invoke``."""
    gw = request.app[GATEWAY_KEY]
    name = check_name(request.match_info["name"])
    request_id = request.headers.get("X-Request-Id") or os.urandom(16).hex()
    token = logs.request_id.set(request_id)
    started = time.perf_counter()
    resp: web.Response | None = None
    try:
        resp = await _invoke(gw, request, name, request_id)
    except GatewayError as exc:
        resp = error_response(exc.status, exc.code, str(exc), exc.retry_after_s)
        resp.headers["X-Request-Id"] = request_id
    finally:
        elapsed_s = time.perf_counter() - started
        # Unknown names are not labels: a scanner must not grow the metric set.
        label = name if name in gw.routes.functions else "_unknown"
        status = resp.status if resp is not None else 500
        metrics.requests_by(label, str(status)).inc()
        metrics.latency_by(label).observe(elapsed_s)
        if gw.access.enabled():
            gw.access.write("invoke", {
                "function": name, "status": status, "duration_ms": round(elapsed_s * 1000, 3),
                "container": resp.headers.get("X-Hearth-Container") if resp is not None else None,
            })
        logs.request_id.reset(token)
    return resp


async def _invoke(gw: Gateway, request: web.Request, name: str, request_id: str) -> web.Response:
    if name not in gw.routes.functions:
        if not gw.routes.ready.is_set():
            raise Unavailable("the routing table is not loaded yet", retry_after_s=1)
        raise FunctionNotFound(f"no function named {name!r}")
    body = await request.read()
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
    start = str(result.meta.get("start", "warm"))
    resp.headers["X-Hearth-Start"] = start
    kind = "prewarmed" if start == "cold" and result.container.origin == "prewarmed" else start
    metrics.starts_by(name, kind).inc()
    return resp


async def admin_functions(request: web.Request) -> web.Response:
    """``/system/functions[/{name}]``: checked here, carried out by the pool manager."""
    check_admin(request)
    gw = request.app[GATEWAY_KEY]
    name = request.match_info.get("name")
    path = "/v1/functions" if name is None else f"/v1/functions/{check_name(name)}"
    if request.path.endswith("/logs"):
        path += "/logs?" + request.query_string
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


async def get_metrics(request: web.Request) -> web.Response:
    return web.Response(body=metrics.exposition(), content_type="text/plain", charset="utf-8")


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
    gw.access.flush()


def make_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=config.max_body_bytes)
    app[GATEWAY_KEY] = gateway = Gateway(config)
    metrics.register_gateway(gateway)
    app.cleanup_ctx.append(background)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi.handler)
    app.router.add_route("*", "/function/{name}", invoke)
    app.router.add_route("*", "/function/{name}/{path:.*}", invoke)
    app.router.add_post("/execute", execute.handler(app[GATEWAY_KEY]))
    app.router.add_get("/system/functions", admin_functions)
    for method in ("GET", "PUT", "DELETE"):
        app.router.add_route(method, "/system/functions/{name}", admin_functions)
    app.router.add_get("/system/functions/{name}/logs", admin_functions)
    from gateway import calls_api  # imported here: it builds on this module's helpers

    calls_api.install(app)
    return app
