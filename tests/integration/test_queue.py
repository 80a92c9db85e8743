"""The bounded wait line on real processes: 429 at once when full, 503 + Retry-After past the deadline."""

from __future__ import annotations

import asyncio
import json
import subprocess
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest

from tests.integration.stack import Stack, pool_containers

pytestmark = pytest.mark.docker

SLOW = textwrap.dedent(
    """
    import time

    def handle(event, context):
        time.sleep(3)
        return "slow"
    """
)


async def test_full_queue_is_429_and_a_long_wait_is_503(engine: None, tmp_path: Path) -> None:
    s = Stack(tmp_path, HEARTH_QUEUE_MAX="2", HEARTH_QUEUE_TIMEOUT_S="1")
    try:
        await asyncio.to_thread(s.up)
        await asyncio.to_thread(s.deploy, "narrow", SLOW, min_scale=1, max_scale=1, concurrency=1)
        await asyncio.to_thread(s.wait_ready, "narrow", 1)
        async with aiohttp.ClientSession() as session:

            async def call() -> tuple[int, str | None, dict[str, str], float]:
                t0 = time.monotonic()
                async with session.get(f"{s.url}/function/narrow") as resp:
                    body = json.loads(await resp.read()) if resp.status != 200 else {}
                    return resp.status, resp.headers.get("Retry-After"), body.get("error", {}), t0

            busy = asyncio.create_task(call())  # takes the only slot for 3 s
            await asyncio.sleep(0.3)
            waiting = [asyncio.create_task(call()) for _ in range(2)]  # fill the line
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            status, _, error, _ = await call()  # one too many
            assert status == 429 and error["code"] == "queue_full"
            assert time.monotonic() - t0 < 0.5, "a full queue must answer at once"
            for status, retry_after, error, _ in await asyncio.gather(*waiting):
                assert status == 503 and error["code"] in ("queue_timeout", "unavailable")
                assert retry_after is not None and int(retry_after) >= 1
            assert (await busy)[0] == 200
    finally:
        await asyncio.to_thread(s.down)


def test_all_containers_dead_is_a_clear_503_then_the_breaker_report_heals(
    engine: None, tmp_path: Path
) -> None:
    # Slow health rounds: recovery here must come from the gateway's breaker
    # report, not from the pool manager's own polling.
    s = Stack(tmp_path, HEARTH_HEALTH_INTERVAL_S="60")
    try:
        s.up()
        s.deploy("fragile", "def handle(event, context):\n    return 'up'\n", min_scale=2, max_scale=2)
        s.wait_ready("fragile", 2)
        assert s.request("GET", "/function/fragile")[0] == 200
        mine = pool_containers(s.pool_id, all_states=False)
        subprocess.run(["docker", "kill", *mine], check=True, capture_output=True, timeout=60)
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, headers, body = s.request("GET", "/function/fragile", timeout_s=10)
            seen.append(status)
            if status == 200:
                break
            assert status == 503, body
            assert int(headers["Retry-After"]) >= 1
            assert json.loads(body)["error"]["code"] == "unavailable"
            time.sleep(0.2)
        assert seen[-1] == 200, seen
        assert 503 in seen
    finally:
        s.down()
