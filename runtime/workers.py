"""The supervisor's pool of forked workers: forking, lending connections, reaping.

Stdlib only. ``Workers`` holds one loaded function's workers. ``acquire``
waits for an idle one (asking a worker that holds a connection to give it
back when none is idle), ``lend`` hands it a client connection and waits
until the connection comes back or the worker dies, and ``on_exit`` turns
a reaped worker into a replacement. What the client is owed for a call a
dead worker had (504 or 502) is read from the worker's slot of shared
memory (``worker.Slots``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from runtime import worker
from runtime.handler import Invoker, error_frame
from runtime.worker import CONTROL, IDLE, RUNNING, Slots

# A worker that closed its socket but did not exit gets this long before SIGKILL.
EXIT_GRACE_S = 1.0
# How often the watchdog looks for a handler past its deadline whose worker
# is still alive (it re-armed or blocked its own SIGALRM).
WATCHDOG_S = 0.5


class Closed(Exception):
    """The client connection must be closed: its stream is over or unusable."""


def describe_status(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exited with status {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class Worker:
    """The supervisor's end of one forked worker."""

    __slots__ = ("ctl", "exited", "final", "index", "killed", "leased", "pid", "reader", "writer")

    def __init__(self, pid: int, ctl: socket.socket, index: int, exited: asyncio.Future[int]) -> None:
        self.pid, self.ctl, self.index, self.exited = pid, ctl, index, exited
        self.leased = False  # serving a client connection lent to it
        self.killed = False  # by the watchdog, past its deadline
        self.final = (IDLE, 0.0, 0.0, False)  # its slot when it was reaped
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter


class Workers:
    """The forked workers of one loaded function."""

    def __init__(self, invoker: Invoker, concurrency: int, timeout_s: float,
                 inherited_fds: Callable[[], list[int]]) -> None:
        self.invoker, self.concurrency, self.timeout_s = invoker, concurrency, timeout_s
        self.inherited_fds = inherited_fds  # the supervisor's sockets, closed in each child
        # Room for replacements forked while the workers they replace are still being reaped.
        self.slots = Slots(2 * concurrency)
        self.live: dict[int, Worker] = {}  # the pool
        self.children: dict[int, Worker] = {}  # forked and not yet reaped
        self.idle: asyncio.Queue[Worker] = asyncio.Queue()
        self.closing = False
        self.tasks: set[asyncio.Task[Any]] = set()

    def busy(self) -> int:
        return sum(self.slots.get(w.index)[0] != IDLE for w in self.live.values())

    async def acquire(self) -> Worker:
        while True:
            if self.idle.empty() and len(self.live) < self.concurrency:
                await self.fill()
            if self.idle.empty():
                self.ask_release()
            chosen = await self.idle.get()
            if self.live.get(chosen.pid) is not chosen:
                continue  # retired while idle; its replacement is queued
            if chosen.reader.at_eof():
                await self.retire(chosen)  # died while idle, not yet reaped
                continue
            return chosen

    def ask_release(self) -> None:
        """Every worker holds a connection: ask one, idle ones first, to give its back."""
        leased = [w for w in self.live.values() if w.leased]
        if leased:
            leased.sort(key=lambda w: self.slots.get(w.index)[0] != IDLE)
            leased[0].writer.write(CONTROL.pack(worker.ASK, 0))

    async def lend(self, chosen: Worker, fd: int, frame: bytes) -> tuple[bytes, bytes | None]:
        """Give connection ``fd`` and its first ``frame`` to ``chosen`` until it comes back.

        Returns (what to send the client, a frame the worker handed back); raises
        Closed when the connection is done."""
        chosen.leased = True
        try:
            socket.send_fds(chosen.ctl, [CONTROL.pack(worker.TAKE, len(frame))], [fd])
        except OSError:  # it died since it was picked; nothing ran
            chosen.leased = False
            return error_frame(503, "refused", "busy", "the worker went away", "warm", 0.0), None
        chosen.writer.write(frame)
        release = asyncio.ensure_future(self._read_release(chosen))
        exited: asyncio.Future[Any] = chosen.exited
        await asyncio.wait([release, exited], return_when=asyncio.FIRST_COMPLETED)
        if release.done() and release.exception() is None:
            kind, payload = release.result()
            chosen.leased = False
            if self.live.get(chosen.pid) is chosen:
                self.idle.put_nowait(chosen)
            if kind == worker.CLOSED:
                raise Closed("the client closed the connection")
            return b"", payload if kind == worker.PENDING else None
        release.cancel()
        return self._answer_for_dead(chosen, await chosen.exited)

    @staticmethod
    async def _read_release(chosen: Worker) -> Any:
        kind, length = CONTROL.unpack(await chosen.reader.readexactly(CONTROL.size))
        return kind, await chosen.reader.readexactly(length) if length else b""

    @staticmethod
    def _answer_for_dead(dead: Worker, status: int) -> tuple[bytes, bytes | None]:
        """What the client is owed for the request a dead worker had (if any)."""
        state, deadline, started, cold = dead.final
        if state == IDLE:
            return b"", None
        if state != RUNNING:
            raise Closed("the worker died while replying")  # the stream is cut mid-frame
        ms = (time.monotonic() - started) * 1000
        start = "cold" if cold else "warm"
        if dead.killed or os.waitstatus_to_exitcode(status) == -signal.SIGALRM:
            message = f"the handler ran past its {deadline - started:g} s deadline"
            return error_frame(504, "timeout", "timeout", message, start, ms), None
        message = f"the worker running the handler {describe_status(status)}"
        return error_frame(502, "crash", "handler_crashed", message, start, ms), None

    async def watchdog(self) -> None:
        while not self.closing:
            await asyncio.sleep(WATCHDOG_S)
            now = time.monotonic()
            for w in list(self.live.values()):
                state, deadline, _, _ = self.slots.get(w.index)
                if state == RUNNING and now > deadline + WATCHDOG_S:
                    w.killed = True
                    kill(w.pid)

    async def fill(self) -> None:
        while not self.closing and len(self.live) < self.concurrency:
            try:
                await self._spawn()
            except OSError as exc:  # e.g. the pids limit; the next invoke retries
                print(f"hearth: cannot fork a worker: {exc}", file=sys.stderr)
                return

    async def _spawn(self) -> None:
        used = {w.index for w in self.children.values()}
        index = next((i for i in range(2 * self.concurrency) if i not in used), None)
        if index is None:
            raise OSError("every worker slot is still in use")
        self.slots.set(index, IDLE)
        parent, child = socket.socketpair()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            # Copies of the supervisor's sockets would keep peers from seeing EOF.
            # A retired worker's socket is closed already (fileno -1), and its old
            # number may now be this child's own.
            ctls = (w.ctl.fileno() for w in self.children.values())
            fds = [*self.inherited_fds(), *(fd for fd in ctls if fd >= 0)]
            worker.become_worker(self.invoker, child, parent, fds, self.slots, index, self.timeout_s)
        child.close()
        # Registered before the first await so that concurrent fills count it.
        forked = Worker(pid, parent, index, asyncio.get_running_loop().create_future())
        self.live[pid] = self.children[pid] = forked
        forked.reader, forked.writer = await asyncio.open_connection(sock=parent)
        self.idle.put_nowait(forked)

    async def retire(self, gone: Worker) -> None:
        """Drop a worker from the pool, reap it, fork its replacement."""
        if self.live.get(gone.pid) is gone:
            del self.live[gone.pid]
        gone.writer.close()
        try:
            async with asyncio.timeout(EXIT_GRACE_S):
                await asyncio.shield(gone.exited)
        except TimeoutError:
            kill(gone.pid)
            await gone.exited
        await self.fill()

    def on_exit(self, pid: int, status: int) -> None:
        """A child was reaped: if it was ours, settle it and replace it."""
        dead = self.children.pop(pid, None)
        if dead is None:
            return
        dead.final = self.slots.get(dead.index)  # read before the slot can go to a replacement
        dead.exited.set_result(status)
        if self.live.get(pid) is dead and not self.closing:
            self.start(self.retire(dead))

    def start(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def shutdown(self) -> None:
        self.closing = True
        for pid in self.children:
            kill(pid)
        for child in self.children.values():
            with contextlib.suppress(ChildProcessError):
                child.exited.set_result(os.waitpid(child.pid, 0)[1])
        self.children.clear()
