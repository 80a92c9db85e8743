"""Webhook dedup shared through a real Redis: two gateways, one delivery, one run.

Each test starts its own redis-server on a free loopback port (no disk, no
persistence) and stops it by its pid. scripts/test.sh installs redis-server;
with CI=true a missing one is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.hooks import Deduper
from tests.integration.stack import Stack, end_process, free_port
from tests.integration.test_hooks import HOOKED, SECRET, calls_of, finished, post_hook, signed

pytestmark = pytest.mark.docker


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but redis-server is missing: scripts/test.sh installs it")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    log = open(tmp_path / "redis.log", "ab")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while not redis_answers(port):
            assert proc.poll() is None, (tmp_path / "redis.log").read_text()
            assert time.monotonic() < deadline, "redis-server did not answer within 10 s"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        end_process(proc)
        log.close()


async def test_two_dedupers_share_a_window_that_expires(redis_url: str) -> None:
    first, second = Deduper(1, redis_url), Deduper(1, redis_url)
    try:
        assert await first.first("hooked:d-1", "call-a") is None
        assert await second.first("hooked:d-1", "call-b") == "call-a"
        assert await second.first("hooked:d-2", "call-c") is None  # another delivery is new
        await asyncio.sleep(1.5)  # Redis expires the key after the 1 s window
        assert await second.first("hooked:d-1", "call-d") is None
    finally:
        await first.close()
        await second.close()


async def test_a_delivery_replayed_to_another_gateway_runs_once(own_stack: Stack, redis_url: str) -> None:
    own_stack.env["HEARTH_DEDUP_REDIS_URL"] = redis_url
    await asyncio.to_thread(own_stack.up)
    # A second gateway: its own port and call store, the same pool manager and Redis.
    peer = Stack(
        own_stack.tmp / "peer",
        HEARTH_DEDUP_REDIS_URL=redis_url,
        HEARTH_ADMIN_TOKEN=own_stack.token,
        HEARTH_CONTROL_PORT=str(own_stack.control_port),
        HEARTH_POOL_ID=own_stack.pool_id,
    )
    peer.token = own_stack.token
    (own_stack.tmp / "peer").mkdir()
    peer.start("gateway")
    try:
        await asyncio.to_thread(peer.wait_http, f"{peer.url}/readyz", "gateway")
        await asyncio.to_thread(own_stack.deploy, "hooked", HOOKED, webhook_secret=SECRET)
        body = json.dumps({"action": "opened"}).encode()
        headers = {"X-Hub-Signature-256": signed(body), "X-GitHub-Delivery": "shared-1"}
        async with aiohttp.ClientSession() as session:
            status, answer = await post_hook(session, own_stack, "hooked", body, **headers)
            assert status == 202 and answer["duplicate"] is False, answer
            status, again = await post_hook(session, peer, "hooked", body, **headers)
            assert status == 202, again
            assert again["id"] == answer["id"] and again["duplicate"] is True
            assert (await finished(session, own_stack, answer["id"]))["state"] == "succeeded"
            assert await calls_of(session, peer, "hooked") == []  # the peer queued nothing

            # A delivery the first gateway never saw runs at the peer.
            fresh = {"X-Hub-Signature-256": signed(body), "X-GitHub-Delivery": "shared-2"}
            status, other = await post_hook(session, peer, "hooked", body, **fresh)
            assert status == 202 and other["duplicate"] is False and other["id"] != answer["id"]
            assert (await finished(session, peer, other["id"]))["state"] == "succeeded"
            assert [c["id"] for c in await calls_of(session, own_stack, "hooked")] == [answer["id"]]
    finally:
        peer.stop("gateway")
