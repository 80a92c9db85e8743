"""The versioned routing table the gateway watches by long-poll."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson


class RoutingTable:
    """The current table and its version; waiters wake when it changes."""

    def __init__(self) -> None:
        # Versions start at the clock so a restarted pool manager's table is
        # newer than anything a gateway saw from the previous one.
        self.version = int(time.time() * 1000)
        self._functions: dict[str, Any] = {}
        self._encoded = self._encode()
        self._changed = asyncio.Event()

    def _encode(self) -> bytes:
        return orjson.dumps({"version": self.version, "functions": self._functions})

    def publish(self, functions: dict[str, Any]) -> bool:
        """Install ``functions``; bump the version only when something changed."""
        if functions == self._functions:
            return False
        self._functions = functions
        self.version += 1
        self._encoded = self._encode()
        # Swap the event so each waiter sees exactly the change it waited for.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return True

    def close(self) -> None:
        self._changed.set()

    @property
    def encoded(self) -> bytes:
        return self._encoded

    async def wait_newer(self, after: int, timeout_s: float) -> bytes:
        """The table once its version exceeds ``after``, or as it is at the timeout."""
        if self.version > after:
            return self._encoded
        try:
            async with asyncio.timeout(timeout_s):
                while self.version <= after and not self._changed.is_set():
                    await self._changed.wait()
        except TimeoutError:
            pass
        return self._encoded
