"""Async calls: how many are accepted, and completed, per second.

    python -m loadtest.bench_async [--calls 2000] [--clients 32] [--sync full|normal] [--callbacks]

Starts its own pool manager and gateway (like the tests do) on the real
Docker engine, deploys a trivial function on two warm containers, sends
``--calls`` async calls from ``--clients`` concurrent senders and waits for
all of them to finish (and, with ``--callbacks``, to be called back at a
local receiver). Accepted/s counts the 202s (each one a committed write);
completed/s is the calls over the time from the first send to the last
completion. Bounded in count and time; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.integration.stack import Stack

FUNCTION = "def handle(event, context):\n    return {'ok': True}\n"
MAX_CALLS = 20_000
TIMEOUT_S = 300.0


async def receiver(counter: list[int]) -> tuple[web.AppRunner, str]:
    async def take(request: web.Request) -> web.Response:
        await request.read()
        counter[0] += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/cb", take)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/cb"


async def send(session: aiohttp.ClientSession, url: str, calls: int, clients: int, callback: str) -> float:
    """Send every call; returns the seconds it took."""
    headers = {"X-Callback-Url": callback} if callback else {}

    async def sender(first: int) -> None:
        for _ in range(first, calls, clients):
            async with session.post(url, data=b'{"n": 1}', headers=headers) as resp:
                await resp.read()
                assert resp.status == 202, resp.status

    t0 = time.perf_counter()
    await asyncio.gather(*(sender(k) for k in range(clients)))
    return time.perf_counter() - t0


async def finished(
    session: aiohttp.ClientSession, s: Stack, calls: int, callbacks: int, called_back: list[int]
) -> bool:
    async with session.get(
        f"{s.url}/system/calls", params={"limit": "1"}, headers={"Authorization": f"Bearer {s.token}"}
    ) as resp:
        counts = (await resp.json())["counts"]
    return counts["succeeded"] + counts["failed"] >= calls and called_back[0] >= callbacks


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` (the gateway's counts) every 20 ms, for at most TIMEOUT_S."""
    deadline = time.monotonic() + TIMEOUT_S
    while not await check():
        if time.monotonic() > deadline:
            raise SystemExit("calls did not finish in time")
        await asyncio.sleep(0.02)


async def measure(s: Stack, calls: int, clients: int, callbacks: bool) -> dict[str, Any]:
    called_back = [0]
    runner, cb_url = await receiver(called_back)
    url = f"{s.url}/async-function/bench-async"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
            await send(session, url, 50, 10, "")  # warm up: connections, containers
            await until(lambda: finished(session, s, 50, 0, called_back))
            start = time.perf_counter()
            send_s = await send(session, url, calls, clients, cb_url if callbacks else "")
            await until(lambda: finished(session, s, calls + 50, calls if callbacks else 0, called_back))
            done_s = time.perf_counter() - start
    finally:
        await runner.cleanup()
    return {"calls": calls, "clients": clients, "accepted_per_s": calls / send_s,
            "completed_per_s": calls / done_s, "send_s": send_s, "done_s": done_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--sync", choices=("full", "normal"), default="full", help="HEARTH_CALLS_SYNC")
    parser.add_argument("--callbacks", action="store_true", help="also POST every result to a local receiver")
    args = parser.parse_args()
    calls = max(1, min(args.calls, MAX_CALLS))
    with tempfile.TemporaryDirectory(prefix="hearth-bench-async-") as tmp:
        stack = Stack(Path(tmp), HEARTH_CALLS_SYNC=args.sync, HEARTH_LOG_LEVEL="WARNING")
        try:
            stack.up()
            stack.deploy("bench-async", FUNCTION, min_scale=2, max_scale=2, concurrency=4)
            stack.wait_ready("bench-async", 2)
            result = asyncio.run(measure(stack, calls, max(1, args.clients), args.callbacks))
        finally:
            stack.down()
    print(f"async calls: {result['calls']} from {result['clients']} clients, "
          f"HEARTH_CALLS_SYNC={args.sync}, callbacks={'on' if args.callbacks else 'off'}")
    print(f"  accepted  {result['accepted_per_s']:8.0f} /s  (all 202s in {result['send_s']:.2f} s)")
    print(f"  completed {result['completed_per_s']:8.0f} /s  (all done in {result['done_s']:.2f} s)")


if __name__ == "__main__":
    main()
