"""Webhook triggers on real containers: signatures, refusals, replayed deliveries."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import textwrap
import time
import uuid
from typing import Any

import aiohttp
import pytest

from tests.integration.stack import Stack

pytestmark = pytest.mark.docker

SECRET = "hook-secret-0123"
HOOKED = textwrap.dedent(
    """
    def handle(event, context):
        return {
            "call_id": context.call_id,
            "event": event.headers.get("x-github-event"),
            "payload": event.json(),
        }
    """
)


def signed(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def calls_of(session: aiohttp.ClientSession, s: Stack, name: str) -> list[dict[str, Any]]:
    async with session.get(
        f"{s.url}/system/calls", params={"function": name, "limit": "1000"},
        headers={"Authorization": f"Bearer {s.token}"},
    ) as resp:
        assert resp.status == 200
        found: list[dict[str, Any]] = (await resp.json())["calls"]
        return found


async def finished(session: aiohttp.ClientSession, s: Stack, call_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        async with session.get(
            f"{s.url}/system/calls/{call_id}", headers={"Authorization": f"Bearer {s.token}"}
        ) as resp:
            info: dict[str, Any] = await resp.json()
        if info["state"] in ("succeeded", "failed"):
            return info
        assert time.monotonic() < deadline, info
        await asyncio.sleep(0.1)


async def post_hook(
    session: aiohttp.ClientSession, s: Stack, name: str, body: bytes, **headers: str
) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{s.url}/hooks/{name}", data=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_signed_hook_runs_and_bad_or_missing_signatures_are_refused(stack: Stack) -> None:
    await asyncio.to_thread(stack.deploy, "hooked", HOOKED, webhook_secret=SECRET)
    body = json.dumps({"action": "opened", "number": 7}).encode()
    async with aiohttp.ClientSession() as session:
        status, answer = await post_hook(
            session, stack, "hooked", body,
            **{"X-Hub-Signature-256": signed(body), "X-GitHub-Event": "pull_request"},
        )
        assert status == 202, answer
        info = await finished(session, stack, answer["id"])
        assert info["state"] == "succeeded" and info["source"] == "hook"
        assert json.loads(info["result"]["body"]) == {
            "call_id": answer["id"], "event": "pull_request", "payload": {"action": "opened", "number": 7},
        }
        before = len(await calls_of(session, stack, "hooked"))
        for headers in (
            {},
            {"X-Hub-Signature-256": signed(body, "wrong-secret")},
            {"X-Hub-Signature-256": signed(body + b" ")},
            {"X-Hub-Signature-256": signed(body).removeprefix("sha256=")},
        ):
            status, answer = await post_hook(session, stack, "hooked", body, **headers)
            assert status == 401 and answer["error"]["code"] == "bad_signature", (headers, answer)
        assert len(await calls_of(session, stack, "hooked")) == before  # nothing was queued


async def test_a_replayed_delivery_runs_once(stack: Stack) -> None:
    await asyncio.to_thread(stack.deploy, "hooked-once", HOOKED, webhook_secret=SECRET)
    body = b'{"ref": "refs/heads/main"}'
    async with aiohttp.ClientSession() as session:
        for header in ("X-GitHub-Delivery", "Idempotency-Key"):
            delivery = {header: str(uuid.uuid4()), "X-Hub-Signature-256": signed(body)}
            answers = [await post_hook(session, stack, "hooked-once", body, **delivery) for _ in range(3)]
            assert [a[0] for a in answers] == [202, 202, 202]
            assert len({a[1]["id"] for a in answers}) == 1
            assert [a[1]["duplicate"] for a in answers] == [False, True, True]
            info = await finished(session, stack, answers[0][1]["id"])
            assert info["state"] == "succeeded" and info["attempts"] == 1
        assert len(await calls_of(session, stack, "hooked-once")) == 2  # one per delivery id


async def test_hooks_to_unknown_or_unsigned_functions_are_refused(stack: Stack) -> None:
    await asyncio.to_thread(stack.deploy, "no-secret", HOOKED)
    body = b"{}"
    async with aiohttp.ClientSession() as session:
        status, answer = await post_hook(
            session, stack, "no-such-hook", body, **{"X-Hub-Signature-256": signed(body)}
        )
        assert status == 404 and answer["error"]["code"] == "function_not_found"
        status, answer = await post_hook(session, stack, "no-secret", body, **{"X-Hub-Signature-256": "x"})
        assert status == 403 and answer["error"]["code"] == "hooks_disabled"
        assert await calls_of(session, stack, "no-secret") == []
