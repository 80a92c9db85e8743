"""Faults on real containers and processes: kills, restarts, adoption, shutdown."""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import textwrap
import time

import aiohttp
import pytest

from tests.integration.stack import Stack, pool_containers

pytestmark = pytest.mark.docker

STEADY = textwrap.dedent(
    """
    import time

    def handle(event, context):
        time.sleep(0.01)
        return "ok"
    """
)


async def stream(url: str, seconds: float, clients: int = 4) -> collections.Counter[int]:
    """A steady, bounded stream of requests; returns the count of each status."""
    statuses: collections.Counter[int] = collections.Counter()
    stop_at = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            for _ in range(2000):  # bounded even if the clock misbehaves
                if time.monotonic() >= stop_at:
                    return
                async with session.get(url) as resp:
                    await resp.read()
                    statuses[resp.status] += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


def breaker_opened(s: Stack) -> float:
    """How often the gateway's breakers have opened, from its /metrics."""
    text = s.request("GET", "/metrics")[2].decode()
    for line in text.splitlines():
        if line.startswith('hearth_breaker_transitions_total{state="open"}'):
            return float(line.split()[-1])
    return 0.0


async def test_docker_kill_during_a_stream_fails_only_requests_in_flight(own_stack: Stack) -> None:
    s = await asyncio.to_thread(own_stack.up)
    await asyncio.to_thread(s.deploy, "steady", STEADY, min_scale=3, max_scale=3)
    info = await asyncio.to_thread(s.wait_ready, "steady", 3)
    assert info["containers"]["ready"] == 3
    victim = (await asyncio.to_thread(s.request, "GET", "/function/steady"))[1]["X-Hearth-Container"]
    opened_before = await asyncio.to_thread(breaker_opened, s)
    traffic = asyncio.create_task(stream(f"{s.url}/function/steady", seconds=4.0))
    await asyncio.sleep(1.0)
    await asyncio.to_thread(
        subprocess.run, ["docker", "kill", victim], check=True, capture_output=True, timeout=30
    )
    statuses = await traffic
    # The gateway saw the victim fail and stopped sending it work on its own,
    # before (or without) the pool manager's health check.
    assert await asyncio.to_thread(breaker_opened, s) > opened_before
    # At most the 4 requests in flight on the victim (one slot, so really one)
    # may fail; everything that never reached it is served elsewhere.
    assert statuses[200] > 100, statuses
    assert sum(n for code, n in statuses.items() if code != 200) <= 4, statuses
    # The pool manager notices and brings the function back to 3 containers.
    info = await asyncio.to_thread(s.wait_ready, "steady", 3, 30.0)
    ids = {c[:12] for c in pool_containers(s.pool_id, all_states=False)}
    assert victim not in ids


def test_function_with_no_container_cold_starts(own_stack: Stack) -> None:
    s = own_stack.up()
    s.deploy("lazy", "def handle(event, context):\n    return 'woke'\n", min_scale=0)
    assert s.function("lazy")["containers"]["ready"] == 0
    status, headers, body = s.request("GET", "/function/lazy")
    assert (status, body) == (200, b"woke")
    assert headers["X-Hearth-Start"] == "cold"
    assert s.function("lazy")["containers"]["ready"] >= 1


def test_cold_start_without_any_prewarmed_container(engine: None, tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Stack(tmp_path, HEARTH_PREWARM="0")
    try:
        s.up()
        s.deploy("bare", "def handle(event, context):\n    return 'from nothing'\n")
        status, headers, body = s.request("GET", "/function/bare")
        assert (status, body) == (200, b"from nothing")
        assert headers["X-Hearth-Start"] == "cold"
    finally:
        s.down()


def test_pool_manager_restart_adopts_containers_without_leaks(own_stack: Stack) -> None:
    s = own_stack.up()
    s.deploy("keeper", "def handle(event, context):\n    return 'kept'\n", min_scale=2, max_scale=2)
    s.wait_ready("keeper", 2)
    time.sleep(1.0)  # let the prewarm pool settle too
    before = set(pool_containers(s.pool_id))
    assert len(before) == 4  # 2 of keeper's, 2 generic
    assert s.stop("pool_manager") == 0
    assert set(pool_containers(s.pool_id, all_states=False)) == before  # left running
    # The gateway serves from its last routing table meanwhile.
    assert s.request("GET", "/function/keeper")[:3:2] == (200, b"kept")
    s.start("pool_manager")
    s.wait_http(f"http://127.0.0.1:{s.control_port}/v1/healthz", "pool_manager")
    info = s.wait_ready("keeper", 2)
    time.sleep(2.0)  # a few health rounds: nothing may be started twice
    assert set(pool_containers(s.pool_id)) == before, "adoption must reuse, not duplicate"
    assert info["containers"] == {"ready": 2, "starting": 0, "draining": 0}
    assert s.request("GET", "/function/keeper")[0] == 200


def test_pool_manager_removes_strays_and_dead_containers_on_start(own_stack: Stack) -> None:
    s = own_stack.up()
    s.deploy("solo", "def handle(event, context):\n    return 1\n", min_scale=1)
    s.wait_ready("solo", 1)
    s.stop("pool_manager")
    running = pool_containers(s.pool_id, all_states=False)
    subprocess.run(["docker", "stop", "-t", "0", running[0]], check=True, capture_output=True)
    s.start("pool_manager")
    s.wait_http(f"http://127.0.0.1:{s.control_port}/v1/healthz", "pool_manager")
    s.wait_ready("solo", 1)
    time.sleep(1.5)
    assert running[0] not in pool_containers(s.pool_id), "a stopped container must be removed"
    assert len(pool_containers(s.pool_id)) == 3


def test_pool_manager_removes_containers_when_asked(engine: None, tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Stack(tmp_path, HEARTH_REMOVE_ON_EXIT="true")
    try:
        s.up()
        s.deploy("gone", "def handle(event, context):\n    return 1\n", min_scale=1)
        s.wait_ready("gone", 1)
        assert pool_containers(s.pool_id)
        assert s.stop("pool_manager") == 0
        assert pool_containers(s.pool_id) == []
    finally:
        s.down()


async def test_gateway_sigterm_finishes_in_flight_requests(own_stack: Stack) -> None:
    s = await asyncio.to_thread(own_stack.up)
    await asyncio.to_thread(s.deploy, "slow", textwrap.dedent(
        """
        import time

        def handle(event, context):
            time.sleep(1.0)
            return "finished"
        """
    ), min_scale=2)
    await asyncio.to_thread(s.wait_ready, "slow", 2)
    async with aiohttp.ClientSession() as session:
        calls = [asyncio.create_task(session.get(f"{s.url}/function/slow")) for _ in range(2)]
        await asyncio.sleep(0.3)
        s.procs["gateway"].send_signal(signal.SIGTERM)
        responses = await asyncio.gather(*calls)
        bodies = [await r.read() for r in responses]
    assert [r.status for r in responses] == [200, 200]
    assert bodies == [b"finished", b"finished"]
    assert await asyncio.to_thread(s.procs["gateway"].wait, 10) == 0
