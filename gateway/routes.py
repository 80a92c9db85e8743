"""The gateway's copy of the routing table, kept fresh by long-polling the pool manager."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.breaker import Breaker
from gateway.config import Config
from gateway.control import ControlClient, ControlUnavailable
from gateway.queue import WaitQueue
from gateway.upstream import Container, FunctionRoute

log = logging.getLogger("hearth.gateway.routes")
# How long the first table may take before that is worth a warning: the pool
# manager is usually started beside the gateway and may not listen yet.
STARTUP_GRACE_S = 10.0


def unavailable_level(loaded: bool, waited_s: float) -> int:
    """How loudly to log a failed fetch: quiet while the pool manager is still starting."""
    return logging.WARNING if loaded or waited_s >= STARTUP_GRACE_S else logging.INFO


class Routes:
    """Functions and their containers. Survives pool-manager outages with the last table."""

    def __init__(
        self, config: Config, control: ControlClient, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.control = control
        self.clock = clock
        self.version = -1
        self.functions: dict[str, FunctionRoute] = {}
        self.queues: dict[str, WaitQueue] = {}
        self.ready = asyncio.Event()
        self._changed = asyncio.Event()

    def queue(self, name: str) -> WaitQueue:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = WaitQueue(self.config.queue_max)
        return q

    def apply(self, table: dict[str, Any]) -> None:
        """Install a table, keeping the live state of containers that stay."""
        old = {c.key: c for f in self.functions.values() for c in f.containers}
        functions: dict[str, FunctionRoute] = {}
        for name, entry in (table.get("functions") or {}).items():
            route = FunctionRoute(
                name=name,
                version=entry["version"],
                concurrency=int(entry["concurrency"]),
                timeout_s=float(entry["timeout_s"]),
                load_error=entry.get("load_error"),
                webhook_secret=entry.get("webhook_secret"),
            )
            for c in entry.get("containers", []):
                container = old.pop(c["id"], None)
                if container is None or container.concurrency != route.concurrency:
                    container = Container(
                        key=c["id"], socket=c["socket"], concurrency=route.concurrency,
                        breaker=Breaker(self.config.breaker_threshold, self.config.breaker_open_s),
                        origin=c.get("origin", "fresh"),
                    )
                route.containers.append(container)
            functions[name] = route
        for gone in old.values():
            gone.close()  # in-flight calls finish on their own connections
        self.functions = functions
        self.version = int(table.get("version", self.version))
        for name, q in list(self.queues.items()):
            q.wake_all()  # new containers, or a function that went away
            if name not in functions and not len(q):
                del self.queues[name]
        self.ready.set()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_version(self, version: int, timeout_s: float) -> bool:
        """Wait until the table is at least ``version``, so a deploy is routable on return."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.version < version:
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    async def watch(self) -> None:
        """Long-poll for new versions forever; back off while the pool manager is away."""
        delay_s = 0.1
        started = self.clock()
        while True:
            try:
                table = await self.control.routes(self.version, timeout_s=60.0)
            except ControlUnavailable as exc:
                self._log_unavailable(exc, self.clock() - started)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 2.0)
                continue
            delay_s = 0.1
            if int(table.get("version", -1)) != self.version:
                self.apply(table)

    def _log_unavailable(self, exc: ControlUnavailable, waited_s: float) -> None:
        loaded = self.ready.is_set()
        level = unavailable_level(loaded, waited_s)
        if loaded:
            log.log(level, "routing table unavailable (serving the last one): %s", exc)
        else:
            log.log(level, "waiting for the pool manager's routing table (%.0f s so far): %s", waited_s, exc)
