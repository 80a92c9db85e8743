"""Async calls on real containers: completion, callbacks exactly once, retries, dead letters."""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.cli import main as cli_main
from gateway.signature import signature_ok, signing_key
from tests.integration.stack import Stack

pytestmark = pytest.mark.docker

WHO = textwrap.dedent(
    """
    def handle(event, context):
        return {"call_id": context.call_id, "body": event.text, "path": event.path}
    """
)


@dataclass
class Receiver:
    """A local callback receiver; fails the first ``fail_first`` posts of each call."""

    key: bytes
    fail_first: int = 0
    url: str = ""
    seen: collections.Counter[str] = field(default_factory=collections.Counter)
    taken: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: collections.defaultdict(list))
    bad_signatures: int = 0

    async def take(self, request: web.Request) -> web.Response:
        call_id = request.headers.get("X-Call-Id", "")
        body = await request.read()
        self.seen[call_id] += 1
        if self.seen[call_id] <= self.fail_first:
            return web.Response(status=500)
        if not signature_ok(self.key, body, request.headers.get("X-Hearth-Signature")):
            self.bad_signatures += 1
        self.taken[call_id].append({"status": request.headers.get("X-Function-Status"), "body": body})
        return web.Response(status=200)


@asynccontextmanager
async def receiving(key: bytes, fail_first: int = 0) -> AsyncIterator[Receiver]:
    receiver = Receiver(key, fail_first)
    app = web.Application()
    app.router.add_post("/cb", receiver.take)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.url = f"http://127.0.0.1:{port}/cb"
    try:
        yield receiver
    finally:
        await runner.cleanup()


async def submit(
    session: aiohttp.ClientSession, s: Stack, name: str, n: int,
    callback: str | None = None, clients: int = 16,
) -> list[str]:
    """``n`` async calls from ``clients`` concurrent senders; returns the call ids."""
    ids: list[str] = []
    headers = {"X-Callback-Url": callback} if callback else {}

    async def sender(k: int) -> None:
        for i in range(k, n, clients):
            async with session.post(f"{s.url}/async-function/{name}", data=f"n={i}", headers=headers) as resp:
                assert resp.status == 202, await resp.text()
                answer = await resp.json()
                assert answer["id"] == resp.headers["X-Call-Id"]
                ids.append(answer["id"])

    await asyncio.gather(*(sender(k) for k in range(clients)))
    return ids


async def call_info(session: aiohttp.ClientSession, s: Stack, call_id: str) -> dict[str, Any]:
    async with session.get(f"{s.url}/system/calls/{call_id}", headers=admin(s)) as resp:
        assert resp.status == 200, await resp.text()
        info: dict[str, Any] = await resp.json()
        return info


async def list_calls(session: aiohttp.ClientSession, s: Stack, **query: str) -> list[dict[str, Any]]:
    async with session.get(f"{s.url}/system/calls", params=query, headers=admin(s)) as resp:
        assert resp.status == 200, await resp.text()
        calls: list[dict[str, Any]] = (await resp.json())["calls"]
        return calls


def admin(s: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {s.token}"}


async def wait_for(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_200_async_calls_complete_and_call_back_exactly_once(stack: Stack) -> None:
    await asyncio.to_thread(stack.deploy, "acall", WHO, concurrency=4, max_scale=3)
    async with receiving(signing_key("", stack.token)) as receiver, aiohttp.ClientSession() as session:
        ids = await submit(session, stack, "acall", 200, receiver.url)
        assert len(set(ids)) == 200

        async def all_back() -> bool:
            return len(receiver.taken) >= 200

        await wait_for(all_back, 120, "200 callbacks")
        await asyncio.sleep(1.0)  # a duplicate would arrive about now
        assert set(receiver.taken) == set(ids)
        assert all(len(got) == 1 for got in receiver.taken.values())
        assert receiver.bad_signatures == 0
        for call_id, [got] in receiver.taken.items():
            assert got["status"] == "200"
            assert json.loads(got["body"])["call_id"] == call_id
        info = await call_info(session, stack, ids[0])
        assert info["state"] == "succeeded" and info["attempts"] == 1
        assert info["callback"]["state"] == "delivered"
        result = json.loads(info["result"]["body"])
        assert result["call_id"] == ids[0] and result["body"].startswith("n=")


async def test_async_errors_are_named_and_nothing_is_queued(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{stack.url}/async-function/no-such-fn", data=b"x") as resp:
            assert resp.status == 404 and "X-Call-Id" not in resp.headers
            assert (await resp.json())["error"]["code"] == "function_not_found"
        async with session.post(f"{stack.url}/async-function/Bad_Name", data=b"x") as resp:
            assert resp.status == 400
        await asyncio.to_thread(stack.deploy, "acall2", WHO)
        bad_cb = {"X-Callback-Url": "file:///etc/passwd"}
        async with session.post(f"{stack.url}/async-function/acall2", headers=bad_cb) as resp:
            assert resp.status == 400 and "X-Callback-Url" in (await resp.json())["error"]["message"]
        async with session.post(f"{stack.url}/async-function/acall2", data=b"x" * (7 << 20)) as resp:
            assert resp.status == 413  # the same size limit as synchronous calls
        assert await list_calls(session, stack, function="acall2") == []
        async with session.get(f"{stack.url}/system/calls/{'0' * 32}", headers=admin(stack)) as resp:
            assert resp.status == 404
        async with session.get(f"{stack.url}/system/calls") as resp:
            assert resp.status == 401
        async with session.get(f"{stack.url}/system/calls?state=bogus", headers=admin(stack)) as resp:
            assert resp.status == 400


def test_cli_invoke_async_and_calls(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    stack.deploy("acli", WHO)
    env = {"HEARTH_ADMIN_TOKEN": stack.token}
    assert cli_main(["--gateway", stack.url, "invoke", "acli", "--async", "-d", "hi"], env) == 0
    call_id = capsys.readouterr().out.strip()
    assert len(call_id) == 32
    deadline = time.monotonic() + 60
    while True:
        assert cli_main(["--gateway", stack.url, "calls", call_id], env) == 0
        shown = json.loads(capsys.readouterr().out)
        if shown["state"] == "succeeded" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert shown["state"] == "succeeded" and json.loads(shown["result"]["body"])["body"] == "hi"
    assert cli_main(["--gateway", stack.url, "calls", "--function", "acli"], env) == 0
    table = capsys.readouterr().out
    assert "STATE" in table and call_id in table and "succeeded" in table


async def test_flaky_receiver_gets_the_result_and_a_dead_one_is_a_dead_letter(own_stack: Stack) -> None:
    own_stack.env.update({
        "HEARTH_CALLBACK_BACKOFF_BASE_S": "0.05", "HEARTH_CALLBACK_BACKOFF_CAP_S": "0.2",
        "HEARTH_CALLBACK_MAX_ATTEMPTS": "4", "HEARTH_CALLBACK_SECRET": "callback-secret-0123456789",
    })
    s = await asyncio.to_thread(own_stack.up)
    await asyncio.to_thread(s.deploy, "flaky", WHO)
    key = b"callback-secret-0123456789"
    async with receiving(key, fail_first=2) as flaky, receiving(key, fail_first=100) as dead, \
            aiohttp.ClientSession() as session:
        [ok_id] = await submit(session, s, "flaky", 1, flaky.url, clients=1)
        [dead_id] = await submit(session, s, "flaky", 1, dead.url, clients=1)

        async def settled() -> bool:
            ok, gone = await call_info(session, s, ok_id), await call_info(session, s, dead_id)
            return bool(ok["callback"]["state"] == "delivered" and gone["state"] == "failed")

        await wait_for(settled, 60, "the callbacks to settle")
        assert flaky.seen[ok_id] == 3 and len(flaky.taken[ok_id]) == 1 and flaky.bad_signatures == 0
        assert dead.seen[dead_id] == 4
        info = await call_info(session, s, dead_id)
        assert info["callback"]["state"] == "failed" and "500" in info["callback"]["last_error"]
        assert json.loads(info["result"]["body"])["call_id"] == dead_id  # the result is kept
        dead_letters = await list_calls(session, s, state="failed")
        assert [c["id"] for c in dead_letters] == [dead_id]


SLOW = textwrap.dedent(
    """
    import time

    def handle(event, context):
        time.sleep(0.1)
        return {"call_id": context.call_id}
    """
)


async def test_sigkill_of_the_gateway_loses_no_queued_call(own_stack: Stack) -> None:
    s = await asyncio.to_thread(own_stack.up)
    await asyncio.to_thread(s.deploy, "slow", SLOW, min_scale=1, max_scale=2)
    await asyncio.to_thread(s.wait_ready, "slow", 1)
    async with aiohttp.ClientSession() as session:
        ids = await submit(session, s, "slow", 100)
        key = {"Idempotency-Key": "order-42"}
        async with session.post(f"{s.url}/async-function/slow", headers=key) as resp:
            keyed_id = resp.headers["X-Call-Id"]
        await asyncio.sleep(0.5)
        listed = await list_calls(session, s, limit="200")
        pending = [c for c in listed if c["state"] in ("queued", "running")]
        assert len(pending) >= 50, "the function is too fast for this test: most calls must still wait"
        await asyncio.to_thread(s.stop, "gateway", signal.SIGKILL)
        await asyncio.to_thread(s.start, "gateway")
        await asyncio.to_thread(s.wait_http, f"{s.url}/readyz", "gateway")
        async with session.post(f"{s.url}/async-function/slow", headers=key) as resp:
            # A repeated key across the restart: the store's unique key answers.
            assert resp.status == 202 and resp.headers["X-Call-Id"] == keyed_id

        async def all_done() -> bool:
            calls = await list_calls(session, s, function="slow", limit="200")
            return len(calls) == 101 and all(c["state"] == "succeeded" for c in calls)

        await wait_for(all_done, 120, "every call to finish after the restart")
        for call_id in ids:
            info = await call_info(session, s, call_id)
            assert 1 <= info["attempts"] <= 2, info  # started at most twice, never more
            assert json.loads(info["result"]["body"]) == {"call_id": call_id}
