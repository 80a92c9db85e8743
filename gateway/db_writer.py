"""One SQLite connection on one thread, with group commit.

sqlite3 blocks, so the event loop hands jobs (functions of a connection)
to this thread. Jobs that arrive while a commit is under way are run
together in the next transaction and committed once: the cost of an fsync
is shared by every request waiting on it, and a job's future resolves only
after its commit, so "written" means durable at the configured level.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("hearth.gateway.db")
T = TypeVar("T")
Job = tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]
MAX_BATCH = 512


class DbClosed(RuntimeError):
    """The writer thread has stopped."""


class DbWriter:
    """Runs jobs on a private connection; each job is its own savepoint inside a shared commit."""

    def __init__(self, path: Path, synchronous: str = "full", schema: str = "") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        self._conn.execute("PRAGMA busy_timeout=5000")
        if schema:
            self._conn.executescript(schema)
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="hearth-calls-db", daemon=True)
        self._thread.start()

    async def run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise DbClosed("the call store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((job, future, loop))
        return await future

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)

    def _serve(self) -> None:
        try:
            while True:
                first = self._jobs.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        self._jobs.put(None)  # finish this batch, then stop
                        break
                    batch.append(job)
                self._commit(batch)
        finally:
            self._conn.close()

    def _commit(self, batch: list[Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for fn, _future, _loop in batch:
                outcomes.append(self._one(fn))
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("call store commit failed: %s", exc)
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            outcomes = [(False, exc)] * len(batch)
        for (_fn, future, loop), (ok, value) in zip(batch, outcomes, strict=True):
            try:
                loop.call_soon_threadsafe(_settle, future, ok, value)
            except RuntimeError:  # that loop has closed; nobody waits any more
                pass

    def _one(self, fn: Callable[[sqlite3.Connection], Any]) -> tuple[bool, Any]:
        # A savepoint per job: one failing job must not undo its neighbours.
        self._conn.execute("SAVEPOINT job")
        try:
            value = fn(self._conn)
        except Exception as exc:
            self._conn.execute("ROLLBACK TO job")
            self._conn.execute("RELEASE job")
            return False, exc
        self._conn.execute("RELEASE job")
        return True, value


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the waiter was cancelled; the write stands
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
