"""Autoscaling on real containers: a step in load, graceful scale-down, scale to zero."""

from __future__ import annotations

import asyncio
import collections
import json
import textwrap
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from tests.integration.stack import Stack

pytestmark = pytest.mark.docker

SLOW = textwrap.dedent(
    """
    import time

    def handle(event, context):
        time.sleep(float(event.query.get("s", "0.2")))
        return "done"
    """
)
# Short windows so a test sees a whole scaling cycle in seconds.
FAST_SCALING = {
    "HEARTH_STABLE_WINDOW_S": "6",
    "HEARTH_PANIC_WINDOW_S": "2",
    "HEARTH_SCALE_TO_ZERO_GRACE_S": "3",
    "HEARTH_AUTOSCALE_TICK_S": "0.25",
    "HEARTH_REPORT_INTERVAL_S": "0.25",
}


def containers(s: Stack, name: str) -> dict[str, int]:
    info = s.function(name)
    return {**info["containers"], "desired": info["scaling"]["desired"] or 0}


async def clients_for(url: str, clients: int, seconds: float, seen: list[tuple[float, str]]) -> list[int]:
    statuses: list[int] = []
    stop_at = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            for _ in range(500):  # bounded
                if time.monotonic() >= stop_at:
                    return
                async with session.get(url) as resp:
                    body = await resp.read()
                    statuses.append(resp.status)
                    if resp.status != 200:
                        print("FAIL", resp.status, body[:300])
                    seen.append((time.monotonic(), resp.headers.get("X-Hearth-Container", "")))

        await asyncio.gather(*(one() for _ in range(clients)))
    return statuses


async def test_step_from_one_to_eight_clients_scales_up_then_down_to_zero(
    engine: None, tmp_path: Path
) -> None:
    s = Stack(tmp_path, **FAST_SCALING)
    try:
        await asyncio.to_thread(s.up)
        await asyncio.to_thread(s.deploy, "stepper", SLOW, concurrency=1, max_scale=8)
        url = f"{s.url}/function/stepper?s=0.2"
        seen: list[tuple[float, str]] = []
        statuses = await clients_for(url, 1, 2.0, seen)
        assert len({c for _, c in seen}) == 1  # one client: one container
        step_at = time.monotonic()
        statuses += await clients_for(url, 8, 5.0, seen)
        assert set(statuses) == {200}, collections.Counter(statuses)
        serving = {c for t, c in seen if t >= step_at + 2.5}
        assert len(serving) >= 6, f"expected the step to be met by ~8 containers, saw {len(serving)}"
        first_seen: dict[str, float] = {}
        for t, c in seen:
            first_seen.setdefault(c, t)
        new = sorted(t - step_at for c, t in first_seen.items() if t > step_at)
        print(f"\nstep 1->8: new containers first served after {', '.join(f'{x:.2f}s' for x in new)}")
        peak = (await asyncio.to_thread(containers, s, "stepper"))["ready"]
        assert 6 <= peak <= 8

        idle_at = time.monotonic()
        went_down = reached_zero = None
        for _ in range(200):  # bounded: 200 x 0.1 s
            counts = await asyncio.to_thread(containers, s, "stepper")
            total = counts["ready"] + counts["draining"]
            if went_down is None and counts["ready"] < peak:
                went_down = time.monotonic() - idle_at
            if total == 0:
                reached_zero = time.monotonic() - idle_at
                break
            await asyncio.sleep(0.1)
        assert went_down is not None, "no scale-down after the load stopped"
        assert reached_zero is not None, f"did not reach zero: {counts}"
        print(f"idle -> first scale-down {went_down:.1f}s, -> zero {reached_zero:.1f}s")
        info = await asyncio.to_thread(s.function, "stepper")
        assert "zero" in info["scaling"]["reason"], info["scaling"]
        # And it comes back from zero on the next call.
        status, headers, _ = await asyncio.to_thread(s.request, "GET", "/function/stepper?s=0")
        assert status == 200 and headers["X-Hearth-Start"] == "cold"
    finally:
        await asyncio.to_thread(s.down)


async def test_scale_down_and_redeploy_drain_without_failing_requests(engine: None, tmp_path: Path) -> None:
    s = Stack(tmp_path, **FAST_SCALING)
    try:
        await asyncio.to_thread(s.up)
        await asyncio.to_thread(s.deploy, "drainer", SLOW, max_scale=4)
        seen: list[tuple[float, str]] = []
        url = f"{s.url}/function/drainer?s=0.3"
        # Load that falls from 4 clients to 1: containers retire while serving.
        busy = asyncio.create_task(clients_for(url, 4, 3.0, seen))
        calm = asyncio.create_task(clients_for(url, 1, 9.0, seen))
        # A long request in flight while the function is redeployed: the old
        # container drains it before going away.
        async with aiohttp.ClientSession() as session:
            long_call = asyncio.create_task(session.get(f"{s.url}/function/drainer?s=2"))
            await asyncio.sleep(0.5)
            await asyncio.to_thread(s.deploy, "drainer", SLOW + "\n# v2\n", max_scale=4)
            resp = await long_call
            assert resp.status == 200 and await resp.read() == b"done"
        statuses = await busy + await calm
        assert statuses and set(statuses) == {200}, collections.Counter(statuses)
    finally:
        await asyncio.to_thread(s.down)


def test_prewarm_pool_grows_with_cold_starts_refills_and_shrinks_back(engine: None, tmp_path: Path) -> None:
    s = Stack(tmp_path, HEARTH_PREWARM="1", HEARTH_PREWARM_MAX="4", HEARTH_PREWARM_WINDOW_S="10",
              **FAST_SCALING)
    try:
        s.up()
        control = f"http://127.0.0.1:{s.control_port}/v1/status"

        def status() -> dict[str, int]:
            req = urllib.request.Request(control, headers={"Authorization": f"Bearer {s.token}"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())["generic"]

        assert status()["wanted"] == 1
        for i in range(4):  # four functions, each met by a cold start
            s.deploy(f"cold-{i}", "def handle(event, context):\n    return 'x'\n")
            code, headers, _ = s.request("GET", f"/function/cold-{i}")
            assert code == 200 and headers["X-Hearth-Start"] == "cold"
        assert status()["wanted"] == 3  # base 1, plus one per two recent cold starts
        deadline = time.monotonic() + 30
        while status()["ready"] < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status()["ready"] == 3, status()
        # Once the cold starts age out of the window, the spares go again.
        deadline = time.monotonic() + 40
        while status()["ready"] > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (status()["wanted"], status()["ready"]) == (1, 1), status()
    finally:
        s.down()


async def test_a_queue_forming_specializes_a_container_at_once(engine: None, tmp_path: Path) -> None:
    # Ticks and reports every 30 s: only the demand path (a report the moment
    # a request queues, acted on as it arrives) can add a container in time.
    s = Stack(tmp_path, HEARTH_AUTOSCALE_TICK_S="30", HEARTH_REPORT_INTERVAL_S="30",
              HEARTH_HEALTH_INTERVAL_S="30")
    try:
        await asyncio.to_thread(s.up)
        await asyncio.to_thread(s.deploy, "queued", SLOW, concurrency=1, min_scale=1, max_scale=2)
        await asyncio.to_thread(s.wait_ready, "queued", 1)
        async with aiohttp.ClientSession() as session:

            async def call(seconds: float) -> tuple[int, str]:
                async with session.get(f"{s.url}/function/queued?s={seconds}") as resp:
                    await resp.read()
                    return resp.status, resp.headers.get("X-Hearth-Container", "")

            first = asyncio.create_task(call(6.0))  # holds the only container's only slot
            await asyncio.sleep(0.5)
            second = await asyncio.wait_for(call(0.0), 30)
            assert not first.done(), "the second call should not have waited for the first"
            first_status, first_container = await first
        assert (first_status, second[0]) == (200, 200)
        # Served by a new container while the first was still busy, long before any tick.
        assert second[1] != first_container
    finally:
        await asyncio.to_thread(s.down)
