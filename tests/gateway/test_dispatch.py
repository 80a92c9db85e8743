"""The dispatcher over real unix sockets to small framed servers standing in for runtimes.

Each stand-in speaks the runtime's wire protocol and answers as told
("ok", or "refused" before any handler ran), so these tests pin down what
the dispatcher does with the answers: safe retries on another container,
the retry budget, the concurrency cap, and the wait line's 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config
from gateway.control import ControlClient
from gateway.dispatch import Dispatcher
from gateway.errors import QueueTimeout
from gateway.routes import Routes
from runtime import protocol


class StandIn:
    """A framed unix-socket server that answers every invoke with ``outcome``."""

    def __init__(self, path: str, outcome: str = "ok", delay_s: float = 0.0) -> None:
        self.path, self.outcome, self.delay_s = path, outcome, delay_s
        self.calls = 0
        self.inflight = 0
        self.peak = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> StandIn:
        self.server = await asyncio.start_unix_server(self.serve, path=self.path)
        return self

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(EOFError, ConnectionError):
            while True:
                await protocol.read_frame(reader)
                self.calls += 1
                self.inflight += 1
                self.peak = max(self.peak, self.inflight)
                await asyncio.sleep(self.delay_s)
                self.inflight -= 1
                status = 200 if self.outcome == "ok" else 503
                writer.write(protocol.encode({"status": status, "outcome": self.outcome}, b"done"))
                await writer.drain()
        writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
def sock_dir() -> Any:
    # Short paths: a unix socket path has a 107-byte limit.
    with tempfile.TemporaryDirectory(prefix="hd-", dir="/tmp") as d:
        yield Path(d)


def make_config(tmp: Path, **env: str) -> Config:
    return Config.from_env({"HEARTH_ADMIN_TOKEN": "admin-token-123", "HEARTH_DATA_DIR": str(tmp), **env})


@contextlib.asynccontextmanager
async def dispatcher(
    config: Config, stand_ins: list[StandIn], concurrency: int = 1
) -> AsyncIterator[Dispatcher]:
    routes = Routes(config, ControlClient(config.control_url, config.control_token))
    containers = [{"id": f"c{i}", "socket": s.path} for i, s in enumerate(stand_ins)]
    routes.apply({"version": 1, "functions": {"fn": {
        "version": "v1", "concurrency": concurrency, "timeout_s": 5.0, "containers": containers,
    }}})
    demand: list[str] = []
    d = Dispatcher(config, routes, demand.append, lambda c: None)
    try:
        yield d
    finally:
        for route in routes.functions.values():
            for c in route.containers:
                c.close()
        for s in stand_ins:
            s.close()


def meta() -> dict[str, Any]:
    return {"op": "invoke", "id": "r", "method": "GET", "path": "/", "query": "", "headers": []}


async def test_a_refused_call_is_retried_on_another_container(sock_dir: Path, tmp_path: Path) -> None:
    refusing = await StandIn(str(sock_dir / "a.sock"), "refused").start()
    serving = await StandIn(str(sock_dir / "b.sock"), "ok").start()
    async with dispatcher(make_config(tmp_path), [refusing, serving]) as d:
        result = await d.invoke("fn", meta(), b"")
    assert (result.meta["outcome"], result.container.key, result.attempts) == ("ok", "c1", 2)
    assert (refusing.calls, serving.calls, d.retries) == (1, 1, 1)


async def test_refused_retries_stop_when_the_budget_is_spent(sock_dir: Path, tmp_path: Path) -> None:
    stand_ins = [await StandIn(str(sock_dir / f"{i}.sock"), "refused").start() for i in range(3)]
    config = make_config(tmp_path, HEARTH_RETRY_RATIO="0", HEARTH_RETRY_MIN_PER_S="0")
    async with dispatcher(config, stand_ins) as d:
        d.budget.tokens = 1.0  # one retry left, for the whole gateway
        first = await d.invoke("fn", meta(), b"")
        second = await d.invoke("fn", meta(), b"")
    # The first call spends the only token on one retry; the second gets none.
    assert (first.attempts, second.attempts) == (2, 1)
    assert second.meta["outcome"] == "refused"
    assert d.retries == 1


async def test_no_container_ever_runs_more_than_its_concurrency(sock_dir: Path, tmp_path: Path) -> None:
    stand_ins = [await StandIn(str(sock_dir / f"{i}.sock"), "ok", delay_s=0.02).start() for i in range(2)]
    async with dispatcher(make_config(tmp_path), stand_ins, concurrency=2) as d:
        results = await asyncio.gather(*(d.invoke("fn", meta(), b"") for _ in range(20)))
    assert all(r.meta["outcome"] == "ok" for r in results)
    assert [s.peak for s in stand_ins] == [2, 2]
    assert sum(s.calls for s in stand_ins) == 20


async def test_a_wait_past_the_queue_timeout_names_the_whole_wait(sock_dir: Path, tmp_path: Path) -> None:
    slow = await StandIn(str(sock_dir / "slow.sock"), "ok", delay_s=1.0).start()
    config = make_config(tmp_path, HEARTH_QUEUE_TIMEOUT_S="0.3")
    async with dispatcher(config, [slow]) as d:
        busy = asyncio.create_task(d.invoke("fn", meta(), b""))
        await asyncio.sleep(0.05)
        # A new routing table wakes every waiter half-way; this one finds no
        # free slot and waits again, for what is left of its deadline.
        loop = asyncio.get_running_loop()
        loop.call_later(0.15, d.routes.queue("fn").wake_all)
        with pytest.raises(QueueTimeout) as info:
            await d.invoke("fn", meta(), b"")
        await busy
    assert "within 0.3 s" in str(info.value)
    assert info.value.retry_after_s == 1
