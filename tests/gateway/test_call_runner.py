"""The call runner against a fake dispatcher and a real local callback receiver."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway import metrics
from gateway.call import Request
from gateway.call_runner import CallRunner
from gateway.calls import CallStore
from gateway.calls_config import CallsConfig
from gateway.errors import FunctionNotFound, GatewayError, Unavailable, UpstreamBroken
from gateway.signature import signature_ok

KEY = b"k" * 32
FAST = CallsConfig(
    workers=3, defer_base_s=0.01, defer_cap_s=0.02, max_deferrals=3,
    callback_backoff_base_s=0.01, callback_backoff_cap_s=0.02, callback_max_attempts=3,
    callback_timeout_s=2.0,
)


@dataclass
class Answer:
    meta: dict[str, Any]
    body: bytes


@dataclass
class FakeDispatcher:
    """Answers with the call id; ``script`` raises for chosen calls, in order."""

    script: dict[str, list[GatewayError]] = field(default_factory=dict)
    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    inflight: int = 0
    peak: int = 0
    delay_s: float = 0.0

    async def invoke(self, name: str, meta: dict[str, Any], body: bytes) -> Answer:
        self.calls[meta["call_id"]] += 1
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            await asyncio.sleep(self.delay_s)
            errors = self.script.get(meta["call_id"])
            if errors:
                raise errors.pop(0)
            meta_out = {"status": 200, "headers": [["Content-Type", "text/plain"]]}
            return Answer(meta_out, meta["call_id"].encode())
        finally:
            self.inflight -= 1


@dataclass
class Receiver:
    url: str
    got: collections.Counter[str] = field(default_factory=collections.Counter)
    bad_signatures: int = 0
    fail_first: int = 0
    seen: collections.Counter[str] = field(default_factory=collections.Counter)


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Any]) -> AsyncIterator[Receiver]:
    rec = Receiver("")

    async def take(request: web.Request) -> web.Response:
        call_id = request.headers["X-Call-Id"]
        body = await request.read()
        rec.seen[call_id] += 1
        if rec.seen[call_id] <= rec.fail_first:
            return web.Response(status=503)
        if not signature_ok(KEY, body, request.headers.get("X-Hearth-Signature")):
            rec.bad_signatures += 1
        rec.got[call_id] += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/cb", take)
    server = await aiohttp_server(app, host="127.0.0.1")
    rec.url = f"http://127.0.0.1:{server.port}/cb"
    yield rec


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CallStore]:
    s = CallStore(tmp_path / "calls.db", "normal")
    try:
        yield s
    finally:
        await s.close()


async def run_until(runner: CallRunner, done: Callable[[], Any], timeout_s: float = 10.0) -> None:
    await runner.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not await done():
            assert time.monotonic() < deadline, "runner did not finish in time"
            await asyncio.sleep(0.02)
    finally:
        await runner.stop(1.0)


def make_runner(store: CallStore, fake: FakeDispatcher, config: CallsConfig = FAST) -> CallRunner:
    ready = asyncio.Event()
    ready.set()
    return CallRunner(config, store, fake, ready, KEY, rand=lambda: 1.0)


async def add(store: CallStore, runner: CallRunner, n: int, callback: str | None = None) -> list[str]:
    ids = [f"{i:032x}" for i in range(n)]
    for cid in ids:
        await store.add(cid, Request(function="fn", callback_url=callback), time.time(), 0)
    runner.poke()
    return ids


def all_settled(store: CallStore) -> Callable[[], Any]:
    async def check() -> bool:
        counts = await store.counts()
        owed = [c for c in await store.list(None, None, 1000) if c.callback_state in ("pending", "sending")]
        return not counts.get("queued") and not counts.get("running") and not owed

    return check


def served(function: str, status: str) -> float:
    labels = {"function": function, "status": status}
    return metrics.REGISTRY.get_sample_value("hearth_requests_total", labels) or 0.0


async def test_every_call_runs_once_and_calls_back_once(store: CallStore, receiver: Receiver) -> None:
    fake = FakeDispatcher(delay_s=0.01)
    runner = make_runner(store, fake)
    before = served("fn", "200")
    ids = await add(store, runner, 30, receiver.url)
    await run_until(runner, all_settled(store))
    assert served("fn", "200") - before == 30  # async runs count as the function's requests
    assert fake.calls == collections.Counter(dict.fromkeys(ids, 1))
    assert receiver.got == collections.Counter(dict.fromkeys(ids, 1))
    assert receiver.bad_signatures == 0
    assert fake.peak <= FAST.workers
    call = await store.get(ids[0])
    assert call is not None and (call.state, call.result_body, call.callback_state) == (
        "succeeded", ids[0].encode(), "delivered")


async def test_refused_before_sending_is_deferred_not_counted(store: CallStore) -> None:
    fake = FakeDispatcher()
    runner = make_runner(store, fake)
    [cid] = await add(store, runner, 1)
    fake.script[cid] = [Unavailable("busy"), Unavailable("busy")]
    await run_until(runner, all_settled(store))
    call = await store.get(cid)
    assert call is not None and (call.state, call.attempts, call.deferrals) == ("succeeded", 1, 2)


async def test_too_many_refusals_fail_the_call(store: CallStore) -> None:
    fake = FakeDispatcher()
    runner = make_runner(store, fake)
    [cid] = await add(store, runner, 1)
    fake.script[cid] = [Unavailable("busy")] * 10
    await run_until(runner, all_settled(store))
    call = await store.get(cid)
    assert call is not None and (call.state, call.status, call.deferrals) == ("failed", 503, 3)
    assert fake.calls[cid] == 4


async def test_a_call_that_may_have_run_is_not_retried(store: CallStore) -> None:
    fake = FakeDispatcher()
    runner = make_runner(store, fake)
    [cid] = await add(store, runner, 1)
    fake.script[cid] = [UpstreamBroken("connection reset")]
    await run_until(runner, all_settled(store))
    call = await store.get(cid)
    assert call is not None and (call.state, call.status, call.attempts) == ("failed", 502, 1)
    assert fake.calls[cid] == 1


async def test_a_function_removed_meanwhile_fails_the_call(store: CallStore) -> None:
    fake = FakeDispatcher()
    runner = make_runner(store, fake)
    [cid] = await add(store, runner, 1)
    fake.script[cid] = [FunctionNotFound("no function named 'fn'")]
    await run_until(runner, all_settled(store))
    call = await store.get(cid)
    assert call is not None and (call.state, call.status) == ("failed", 404)
    assert call.error is not None and call.error.startswith("function_not_found")


async def test_a_flaky_receiver_gets_the_result_on_the_third_try(
    store: CallStore, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    runner = make_runner(store, FakeDispatcher())
    [cid] = await add(store, runner, 1, receiver.url)
    await run_until(runner, all_settled(store))
    call = await store.get(cid)
    assert receiver.got[cid] == 1 and receiver.seen[cid] == 3
    assert call is not None and (call.state, call.callback_state, call.callback_attempts) == (
        "succeeded", "delivered", 3)


async def test_a_dead_receiver_puts_the_call_on_the_dead_letter_list(
    store: CallStore, receiver: Receiver
) -> None:
    receiver.fail_first = 100
    runner = make_runner(store, FakeDispatcher())
    [cid] = await add(store, runner, 1, receiver.url)
    await run_until(runner, all_settled(store))
    assert receiver.seen[cid] == FAST.callback_max_attempts
    [dead] = await store.list("failed", None, 10)
    assert (dead.id, dead.callback_state) == (cid, "failed")
    assert "receiver answered 503" in (dead.error or "")


async def test_stop_leaves_unfinished_calls_to_the_next_start(store: CallStore) -> None:
    fake = FakeDispatcher(delay_s=5.0)
    runner = make_runner(store, fake)
    await add(store, runner, 2)
    await runner.start()
    await asyncio.sleep(0.2)
    await runner.stop(0.1)
    assert (await store.counts()) == {"running": 2}
    fake.delay_s = 0.0
    again = make_runner(store, fake)
    await run_until(again, all_settled(store))
    assert all(c.state == "succeeded" and c.attempts == 2 for c in await store.list(None, None, 10))
