"""Self-healing under faults: a hung container, a SIGKILLed pool manager, code that fails to load."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.stack import Stack, pool_containers
from tests.integration.test_faults import STEADY, stream

pytestmark = pytest.mark.docker


def host_pids(container: str) -> list[int]:
    """Every process of the container (supervisor and workers), as host pids."""
    out = subprocess.run(
        ["docker", "top", container, "-eo", "pid"], capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    return [int(p) for p in out.split()[1:]]


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass  # already replaced and gone


async def test_a_hung_container_is_replaced_and_others_keep_serving(engine: None, tmp_path: Path) -> None:
    s = Stack(tmp_path, HEARTH_TIMEOUT_MARGIN_S="0.5")
    await asyncio.to_thread(s.up)
    try:
        await asyncio.to_thread(s.deploy, "hanger", STEADY, min_scale=3, max_scale=3, timeout_s=1.0)
        await asyncio.to_thread(s.wait_ready, "hanger", 3)
        victim = (await asyncio.to_thread(s.request, "GET", "/function/hanger"))[1]["X-Hearth-Container"]
        traffic = asyncio.create_task(stream(f"{s.url}/function/hanger", seconds=5.0))
        await asyncio.sleep(1.0)
        # Stays "running" for Docker, answers nothing: its workers serve
        # connections of their own, so each of them is stopped too.
        pids = await asyncio.to_thread(host_pids, victim)
        assert len(pids) >= 2, pids
        signal_all(pids, signal.SIGSTOP)
        try:
            statuses = await traffic
        finally:
            signal_all(pids, signal.SIGCONT)
        # Only requests that had reached the hung container may fail.
        assert statuses[200] > 100, statuses
        assert sum(n for code, n in statuses.items() if code != 200) <= 2, statuses
        await asyncio.to_thread(s.wait_ready, "hanger", 3, 30.0)
        running = {c[:12] for c in await asyncio.to_thread(pool_containers, s.pool_id, False)}
        assert victim not in running
    finally:
        await asyncio.to_thread(s.down)


async def test_pool_manager_sigkill_during_load(own_stack: Stack) -> None:
    s = await asyncio.to_thread(own_stack.up)
    await asyncio.to_thread(s.deploy, "survivor", STEADY, min_scale=2, max_scale=2)
    await asyncio.to_thread(s.wait_ready, "survivor", 2)
    await asyncio.sleep(1.0)
    before = set(await asyncio.to_thread(pool_containers, s.pool_id))
    traffic = asyncio.create_task(stream(f"{s.url}/function/survivor", seconds=5.0))
    await asyncio.sleep(1.0)
    await asyncio.to_thread(s.stop, "pool_manager", signal.SIGKILL)
    await asyncio.sleep(1.5)  # the gateway serves from its last routing table
    s.start("pool_manager")
    await asyncio.to_thread(s.wait_http, f"http://127.0.0.1:{s.control_port}/v1/healthz", "pool_manager")
    statuses = await traffic
    assert set(statuses) == {200}, statuses
    await asyncio.sleep(2.0)  # several health and scaling rounds
    after = set(await asyncio.to_thread(pool_containers, s.pool_id))
    assert after == before, "the restarted pool manager must adopt, not duplicate or leak"


async def test_code_that_fails_to_load_errors_clearly_and_backs_off(own_stack: Stack) -> None:
    s = await asyncio.to_thread(own_stack.up)
    await asyncio.to_thread(
        s.deploy, "broken", "import does_not_exist\n\ndef handle(event, context):\n    return 1\n"
    )
    created: collections.Counter[str] = collections.Counter()
    answers = []
    t0 = time.monotonic()
    for _ in range(20):  # 20 calls over ~5 s
        status, _, body = await asyncio.to_thread(s.request, "GET", "/function/broken")
        answers.append((status, json.loads(body)["error"]))
        for c in await asyncio.to_thread(pool_containers, s.pool_id):
            created[c] += 1
        await asyncio.sleep(0.25)
    assert time.monotonic() - t0 < 60
    assert all(status == 502 for status, _ in answers), answers
    assert answers[-1][1]["code"] == "function_load_failed"
    assert "does_not_exist" in answers[-1][1]["message"]
    # Backoff: a handful of attempts in ~5 s, not one per call or per tick.
    assert len(created) <= 2 + 6, f"{len(created)} containers were made for code that cannot load"
    info = await asyncio.to_thread(s.function, "broken")
    assert info["scaling"]["load_failures"] >= 1
    # A fixed deploy works at once, without waiting out the backoff.
    await asyncio.to_thread(s.deploy, "broken", "def handle(event, context):\n    return 'fixed'\n")
    status, _, body = await asyncio.to_thread(s.request, "GET", "/function/broken")
    assert (status, body) == (200, b"fixed")


def test_dead_prewarmed_containers_are_not_blamed_on_the_function(engine: None, tmp_path: Path) -> None:
    # Slow health rounds: the pool still believes its killed generics are warm.
    s = Stack(tmp_path, HEARTH_HEALTH_INTERVAL_S="60")
    try:
        s.up()
        s.deploy("innocent", "def handle(event, context):\n    return 'fine'\n")
        generics = pool_containers(s.pool_id, all_states=False)
        assert len(generics) == 2
        subprocess.run(["docker", "kill", *generics], check=True, capture_output=True, timeout=60)
        status, headers, body = s.request("GET", "/function/innocent", timeout_s=60)
        assert (status, body) == (200, b"fine"), body
        assert headers["X-Hearth-Container"] not in {g[:12] for g in generics}
        info = s.function("innocent")
        assert info["load_error"] is None and info["scaling"]["load_failures"] == 0
    finally:
        s.down()
