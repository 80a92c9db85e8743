"""Workers that drain the call store: run calls, deliver callbacks, purge old results.

Each loop claims what is due (a claim is one UPDATE, so nothing is taken
twice), works on it in bounded tasks, and sleeps until the next due time
or until poked by new work. A call that reached no container (the
dispatcher refused before sending) did not run, so it goes back to the
queue with a backoff; anything that may have reached the handler is
recorded as the call's result and never run again by Hearth, except once
after a gateway crash (see ``MAX_RUNS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import aiohttp
import orjson

from gateway import metrics
from gateway.call import Call, Outcome
from gateway.callbacks import backoff_s, callback_headers, post
from gateway.calls import CallStore
from gateway.calls_config import CallsConfig
from gateway.errors import FunctionLoadFailed, GatewayError, QueueFull, QueueTimeout, Unavailable
from gateway.signature import sign
from hearth import logs

log = logging.getLogger("hearth.gateway.calls")
# Refusals that happen before a container saw the request.
NOT_STARTED = (Unavailable, QueueFull, QueueTimeout, FunctionLoadFailed)
# A call may be started at most twice: once, and once more if the gateway
# died while it ran (its handler sees the same context.call_id both times).
MAX_RUNS = 2
IDLE_POLL_S = 5.0  # a safety net: new work and finished tasks poke the loops anyway


class Answer(Protocol):
    meta: dict[str, Any]
    body: bytes


class Invoker(Protocol):
    """The seam to the dispatcher (a fake one in unit tests)."""

    async def invoke(self, name: str, meta: dict[str, Any], body: bytes) -> Answer: ...


def error_outcome(exc: GatewayError) -> Outcome:
    body = orjson.dumps({"error": {"code": exc.code, "message": str(exc)}})
    return Outcome(exc.status, [["Content-Type", "application/json"]], body, f"{exc.code}: {exc}")


class CallRunner:
    """Runs stored calls through the dispatcher with bounded concurrency."""

    def __init__(
        self, config: CallsConfig, store: CallStore, dispatcher: Invoker, ready: asyncio.Event,
        signing_key: bytes, clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.store = store
        self.dispatcher = dispatcher
        self.ready = ready  # the routing table is loaded: function names mean something
        self.signing_key = signing_key
        self.clock = clock
        self.rand = rand
        self._wake = asyncio.Event()
        self._callback_wake = asyncio.Event()
        self._running: set[asyncio.Task[Any]] = set()
        self._sending: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []
        self._session: aiohttp.ClientSession | None = None

    def poke(self) -> None:
        """A call was stored: look for work now."""
        self._wake.set()

    async def start(self) -> None:
        found = await self.store.recover(self.clock(), MAX_RUNS)
        if any(found.values()):
            log.warning("resuming after a stop: %s", found)
        self._session = aiohttp.ClientSession()
        self._loops = [
            asyncio.create_task(self._run_loop()),
            asyncio.create_task(self._callback_loop()),
            asyncio.create_task(self._purge_loop()),
        ]

    async def stop(self, grace_s: float) -> None:
        """Stop taking work; give calls in progress ``grace_s`` to finish, then cancel them."""
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        busy = self._running | self._sending
        if busy:
            _done, pending = await asyncio.wait(busy, timeout=grace_s)
            for task in pending:  # left "running": re-queued at the next start
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # -- running calls --------------------------------------------------------

    async def _run_loop(self) -> None:
        await self.ready.wait()
        while True:
            self._wake.clear()
            free = self.config.workers - len(self._running)
            calls, due = await self._claim(self.store.claim, free)
            for call in calls:
                self._spawn(self._running, self._run(call), self._wake)
            await _sleep(self._wake, self._wait_s(due, free - len(calls)))

    async def _run(self, call: Call) -> None:
        # The call id is the request id: the function's own log lines, the
        # container's and the gateway's can be joined on it, as for sync calls.
        token = logs.request_id.set(call.id)
        started = time.perf_counter()
        try:
            outcome = await self._outcome(call)
        finally:
            logs.request_id.reset(token)
        if outcome is None:
            return  # deferred: it did not run
        metrics.requests_by(call.function, str(outcome.status)).inc()
        metrics.latency_by(call.function).observe(time.perf_counter() - started)
        await self.store.finish(call.id, outcome, self.clock())
        if call.callback_url:
            self._callback_wake.set()

    async def _outcome(self, call: Call) -> Outcome | None:
        """What running ``call`` came to; None when it was put back, never having run."""
        meta = {
            "op": "invoke", "id": call.id, "call_id": call.id, "method": call.method,
            "path": call.path, "query": call.query, "headers": call.headers,
        }
        try:
            result = await self.dispatcher.invoke(call.function, meta, call.body)
        except NOT_STARTED as exc:
            if call.deferrals < self.config.max_deferrals:
                await self._defer(call, exc)
                return None
            return error_outcome(exc)
        except GatewayError as exc:
            return error_outcome(exc)
        except Exception as exc:  # a bug must not leave the call "running" until a restart
            log.exception("running call %s failed", call.id)
            return error_outcome(GatewayError(f"internal error: {type(exc).__name__}"))
        status = int(result.meta.get("status", 502))
        return Outcome(status, [list(h) for h in result.meta.get("headers") or ()], result.body)

    async def _defer(self, call: Call, exc: GatewayError) -> None:
        now = self.clock()
        delay_s = backoff_s(call.deferrals + 1, self.config.defer_base_s, self.config.defer_cap_s, self.rand)
        await self.store.defer(call.id, now + delay_s, f"{exc.code}: {exc}", now)

    # -- callbacks ---------------------------------------------------------------

    async def _callback_loop(self) -> None:
        while True:
            self._callback_wake.clear()
            free = self.config.workers - len(self._sending)
            calls, due = await self._claim(self.store.claim_callbacks, free)
            for call in calls:
                self._spawn(self._sending, self._deliver(call), self._callback_wake)
            await _sleep(self._callback_wake, self._wait_s(due, free - len(calls)))

    async def _deliver(self, call: Call) -> None:
        assert call.callback_url is not None and self._session is not None
        body = call.result_body or b""
        headers = callback_headers(
            call.id, call.function, call.status or 500, call.result_headers, sign(self.signing_key, body)
        )
        error = await post(self._session, call.callback_url, body, headers, self.config.callback_timeout_s)
        attempts, now = call.callback_attempts + 1, self.clock()
        if error is None:
            await self.store.callback_delivered(call.id, attempts, now)
        elif attempts >= self.config.callback_max_attempts:
            log.warning("callback for call %s failed %d times, giving up: %s", call.id, attempts, error)
            await self.store.callback_dead(call.id, attempts, error, now)
        else:
            c = self.config
            delay_s = backoff_s(attempts, c.callback_backoff_base_s, c.callback_backoff_cap_s, self.rand)
            await self.store.callback_retry(call.id, attempts, now + delay_s, error, now)

    # -- housekeeping ------------------------------------------------------------

    async def _purge_loop(self) -> None:
        interval_s = min(60.0, self.config.retention_s / 2)
        while True:
            try:
                purged = await self.store.purge(
                    self.clock(), self.config.retention_s, self.config.failed_retention_s
                )
                if purged:
                    log.info("purged %d finished calls past their retention", purged)
            except Exception:  # the loop must outlive one bad round
                log.exception("purging calls failed")
            await asyncio.sleep(interval_s)

    async def _claim(
        self, claim: Callable[[int, float], Coroutine[Any, Any, tuple[list[Call], float | None]]], free: int
    ) -> tuple[list[Call], float | None]:
        try:
            return await claim(free, self.clock())
        except Exception:  # e.g. a full disk: keep the loop, try again soon
            log.exception("claiming calls failed")
            return [], self.clock() + 1.0

    def _wait_s(self, due: float | None, free: int) -> float:
        if free <= 0 or due is None:
            return IDLE_POLL_S  # a finished task or a new call wakes us sooner
        return min(max(0.0, due - self.clock()), IDLE_POLL_S)

    def _spawn(
        self, tasks: set[asyncio.Task[Any]], coro: Coroutine[Any, Any, None], wake: asyncio.Event
    ) -> None:
        task = asyncio.create_task(_logged(coro))
        tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            tasks.discard(t)
            wake.set()  # a slot is free

        task.add_done_callback(done)


async def _logged(coro: Coroutine[Any, Any, None]) -> None:
    # A failing task leaves its call "running" until the next start; say so loudly.
    try:
        await coro
    except Exception:
        log.exception("an async call task failed")


async def _sleep(event: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)
