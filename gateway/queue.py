"""A bounded wait line per function for requests that find every container busy."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from gateway.errors import QueueFull, QueueTimeout


class WaitQueue:
    """FIFO waiters woken when a slot frees or the routing table changes."""

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self._waiters)

    async def wait(self, timeout_s: float) -> None:
        """Wait for a wake-up; raises QueueFull at once, QueueTimeout past ``timeout_s``."""
        if len(self._waiters) >= self.max_waiting:
            raise QueueFull("too many requests are waiting for this function", retry_after_s=1)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(timeout_s):
                await fut
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                self.wake_one()  # woken just as time ran out: pass it on
            raise QueueTimeout(
                f"no container became free within {timeout_s:g} s", retry_after_s=max(1, round(timeout_s))
            ) from None
        except BaseException:
            # Woken, then cancelled before it could run: pass the wake-up on,
            # or a free slot would sit unused until someone else's timeout.
            if fut.done() and not fut.cancelled():
                self.wake_one()
            raise
        finally:
            if not fut.done():
                fut.cancel()
            # A woken future was popped by wake_one/wake_all; only a cancelled
            # one can still be listed. (A miss raises ValueError, whose message
            # is the future's repr: costly on the hot path.)
            if fut.cancelled():
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)

    def wake_one(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def wake_all(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
