"""HTTP routes of async calls and webhooks: /async-function, /hooks, /system/calls.

A call is committed to the call store before its 202 goes out; the
runner (call_runner) takes it from there.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from gateway.app import GATEWAY_KEY, HOP_HEADERS, Gateway, check_admin, check_name
from gateway.call import STATES, Request
from gateway.call_runner import CallRunner
from gateway.callbacks import BadCallbackUrl, check_callback_url
from gateway.calls import CallStore
from gateway.errors import BadRequest, FunctionNotFound, GatewayError, Unauthorized, Unavailable
from gateway.hooks import BadDeliveryId, Deduper, delivery_key
from gateway.signature import signature_ok, signing_key
from gateway.upstream import FunctionRoute

CALL_ID_RE = re.compile(r"[0-9a-f]{32}")
MAX_LIST_LIMIT = 1000
SHUTDOWN_GRACE_S = 10.0


class HooksDisabled(GatewayError):
    """The function has no webhook_secret, so nothing could prove a hook came from its sender."""

    status, code = 403, "hooks_disabled"


class BadSignature(Unauthorized):
    code = "bad_signature"


class CallNotFound(GatewayError):
    status, code = 404, "call_not_found"


class Calls:
    """One gateway's async-call machinery: the store, its runner and the dedup window."""

    def __init__(self, gw: Gateway) -> None:
        config = gw.config.calls
        self.config = config
        self.store = CallStore(gw.config.data_dir / "gateway" / "calls.db", config.sync)
        self.deduper = Deduper(config.dedup_window_s, config.dedup_redis_url)
        key = signing_key(config.callback_secret, gw.config.admin_token)
        self.runner = CallRunner(config, self.store, gw.dispatcher, gw.routes.ready, key)
        self.clock = time.time

    async def accept(self, req: Request) -> tuple[str, bool]:
        """Store a call (durably) unless it repeats a delivery; its id, and whether it is new."""
        call_id = uuid.uuid4().hex
        key = req.dedup_key
        if key is not None:
            first = await self.deduper.first(key, call_id)
            if first is not None:
                return first, False
        now = self.clock()
        try:
            stored_id, created = await self.store.add(call_id, req, now, now - self.config.dedup_window_s)
        except Exception:
            if key is not None:
                await self.deduper.forget(key)  # not stored: a redelivery must get through
            raise
        if key is not None and not created:
            await self.deduper.remember(key, stored_id)  # seen before a restart emptied the cache
        if created:
            self.runner.poke()
        return stored_id, created

    async def close(self) -> None:
        await self.deduper.close()
        await self.store.close()


CALLS_KEY = web.AppKey("calls", Calls)


def _route(gw: Gateway, name: str) -> FunctionRoute:
    route = gw.routes.functions.get(check_name(name))
    if route is None:
        if not gw.routes.ready.is_set():
            raise Unavailable("the routing table is not loaded yet", retry_after_s=1)
        raise FunctionNotFound(f"no function named {name!r}")
    return route


def _request(request: web.Request, name: str, body: bytes, source: str) -> Request:
    try:
        key = delivery_key(name, request.headers)
    except BadDeliveryId as exc:
        raise BadRequest(str(exc)) from None
    return Request(
        function=name, method="POST", path="/" + request.match_info.get("path", ""),
        query=request.query_string, body=body, source=source, dedup_key=key,
        headers=[[k, v] for k, v in request.headers.items() if k.lower() not in HOP_HEADERS],
    )


def _accepted(call_id: str, name: str, created: bool) -> web.Response:
    body = {
        "id": call_id, "function": name, "status_url": f"/system/calls/{call_id}", "duplicate": not created,
    }
    resp = web.Response(status=202, body=orjson.dumps(body), content_type="application/json")
    resp.headers["X-Call-Id"] = call_id
    return resp


async def async_invoke(request: web.Request) -> web.Response:
    gw, calls = request.app[GATEWAY_KEY], request.app[CALLS_KEY]
    name = _route(gw, request.match_info["name"]).name
    callback = request.headers.get("X-Callback-Url")
    if callback is not None:
        try:
            check_callback_url(callback, calls.config.callback_hosts)
        except BadCallbackUrl as exc:
            raise BadRequest(str(exc)) from None
    req = _request(request, name, await request.read(), "async")
    req.callback_url = callback
    call_id, created = await calls.accept(req)
    return _accepted(call_id, name, created)


async def hook(request: web.Request) -> web.Response:
    gw, calls = request.app[GATEWAY_KEY], request.app[CALLS_KEY]
    route = _route(gw, request.match_info["name"])
    if not route.webhook_secret:
        raise HooksDisabled(f"function {route.name!r} has no webhook_secret, so it takes no hooks")
    body = await request.read()
    if not signature_ok(route.webhook_secret.encode(), body, request.headers.get("X-Hub-Signature-256")):
        raise BadSignature("missing or wrong X-Hub-Signature-256 (sha256=<hex HMAC-SHA256 of the body>)")
    call_id, created = await calls.accept(_request(request, route.name, body, "hook"))
    return _accepted(call_id, route.name, created)


async def get_call(request: web.Request) -> web.Response:
    check_admin(request)
    call_id = request.match_info["id"]
    call = await request.app[CALLS_KEY].store.get(call_id) if CALL_ID_RE.fullmatch(call_id) else None
    if call is None:
        raise CallNotFound(f"no call with id {call_id!r} (finished calls are kept for a while, then purged)")
    return web.Response(body=orjson.dumps(call.describe()), content_type="application/json")


async def list_calls(request: web.Request) -> web.Response:
    """``GET /system/calls?state=failed&function=NAME&limit=N``: newest first, and counts by state."""
    check_admin(request)
    state = request.query.get("state") or None
    if state is not None and state not in STATES:
        raise BadRequest(f"state must be one of {', '.join(STATES)}")
    function = request.query.get("function") or None
    if function is not None:
        check_name(function)
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIST_LIMIT}")
    store = request.app[CALLS_KEY].store
    found, counts = await store.list(state, function, limit), await store.counts(function)
    body = {"calls": [c.summary() for c in found], "counts": {s: counts.get(s, 0) for s in STATES}}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    calls = app[CALLS_KEY]
    await calls.runner.start()
    yield
    await calls.runner.stop(min(SHUTDOWN_GRACE_S, app[GATEWAY_KEY].config.shutdown_timeout_s))
    await calls.close()


def install(app: web.Application) -> None:
    """Add the async routes to the gateway app; call after the Gateway is in ``app``."""
    app[CALLS_KEY] = Calls(app[GATEWAY_KEY])
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_post("/async-function/{name}", async_invoke)
    app.router.add_post("/async-function/{name}/{path:.*}", async_invoke)
    app.router.add_post("/hooks/{name}", hook)
    app.router.add_get("/system/calls", list_calls)
    app.router.add_get("/system/calls/{id}", get_call)
