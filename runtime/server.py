"""The in-container runtime: loads one function and runs its invocations.

Stdlib only. One asyncio supervisor owns the unix socket, answers ``health``
at once, imports the function on ``load`` and then forks ``concurrency``
workers from itself, so every worker starts with the code already imported.
A connection's first ``invoke`` lends the connection itself to an idle
worker (``worker.py``), which then serves the client directly until it gives
the connection back. A worker that overruns its deadline is killed, and one
that dies is reaped; the supervisor answers the request it was running (504
or 502) and forks a fresh worker from the loaded supervisor in about a
millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from runtime import protocol, sandbox, worker
from runtime.handler import Invoker, check_load, describe_exc, error_frame, extract, import_handler
from runtime.worker import CONTROL, IDLE, RUNNING, Slots

# A worker that closed its socket but did not exit gets this long before SIGKILL.
EXIT_GRACE_S = 1.0
# How often the watchdog looks for a handler past its deadline whose worker
# is still alive (it re-armed or blocked its own SIGALRM).
WATCHDOG_S = 0.5


class Closed(Exception):
    """The client connection must be closed: its stream is over or unusable."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the runtime listens and where it unpacks code."""

    socket_path: str
    code_dir: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        default_socket = os.path.join(protocol.CONTAINER_SOCKET_DIR, protocol.SOCKET_NAME)
        path = environ.get("HEARTH_SOCKET") or default_socket
        if len(os.fsencode(path)) > 107:  # sun_path limit
            raise SystemExit(f"HEARTH_SOCKET is longer than a unix socket path allows: {path}")
        return cls(path, environ.get("HEARTH_CODE_DIR") or "/tmp/hearth-code")



def _describe_status(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exited with status {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class Worker:
    """The supervisor's end of one forked worker."""

    __slots__ = ("ctl", "exited", "fd", "final", "index", "killed", "leased", "pid", "reader", "writer")

    def __init__(self, pid: int, ctl: socket.socket, index: int, exited: asyncio.Future[int]) -> None:
        self.pid, self.ctl, self.fd, self.index, self.exited = pid, ctl, ctl.fileno(), index, exited
        self.leased = False  # serving a client connection lent to it
        self.killed = False  # by the watchdog, past its deadline
        self.final = (IDLE, 0.0, 0.0, False)  # its slot when it was reaped
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter


class Runtime:
    """The supervisor: one loaded function, its workers, and the client connections."""

    def __init__(self, code_dir: str, socket_path: str = "") -> None:
        self.code_dir, self.socket_path = code_dir, socket_path
        self.executor: sandbox.Executor | None = None  # set by a load in sandbox mode
        self.function: str | None = None
        self.version: str | None = None
        self.invoker: Invoker | None = None
        self.concurrency = 0
        self.timeout_s = 30.0
        self.served = False
        self.closing = False
        self.slots = Slots(0)
        self.workers: dict[int, Worker] = {}  # the live pool
        self.children: dict[int, Worker] = {}  # forked and not yet reaped
        self.idle: asyncio.Queue[Worker] = asyncio.Queue()
        self.conn_fds: set[int] = set()
        self.listen_fds: list[int] = []
        self.tasks: set[asyncio.Task[Any]] = set()

    async def serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if self.executor is not None and sandbox.from_inside(sock):
            writer.close()  # sandboxed code must not reach us; only the host may
            return
        fd = sock.fileno()
        self.conn_fds.add(fd)
        pending: bytes | None = None  # a frame a worker read and handed back
        try:
            while True:
                try:
                    if pending is None:
                        meta, body = await protocol.read_frame(reader)
                    else:
                        meta, body = worker.split(pending)
                        pending = None
                except (EOFError, ConnectionError, protocol.ProtocolError):
                    return
                op = meta.get("op")
                if op == "invoke":
                    reply, pending = await self.invoke(reader, writer, meta, body)
                    writer.write(reply)
                elif op == "execute":
                    writer.write(await sandbox.execute(self.executor, body))
                elif op == "health":
                    writer.write(protocol.encode(self.health()))
                elif op == "load":
                    writer.write(protocol.encode(await self.load(meta, body)))
                else:
                    error = {"code": "unknown_op", "message": f"unknown op {op!r}"}
                    writer.write(protocol.encode({"ok": False, "error": error}))
                await writer.drain()
        except Closed:
            return
        except asyncio.CancelledError:
            return  # shutdown; 3.11 would log a cancelled connection task as an error
        finally:
            self.conn_fds.discard(fd)
            writer.close()

    def health(self) -> dict[str, Any]:
        busy = sum(self.slots.get(w.index)[0] != IDLE for w in self.workers.values())
        answer = {"ok": True, "function": self.function, "version": self.version,
                  "workers": len(self.workers), "busy": busy, "pid": os.getpid()}
        return answer | (self.executor.health() if self.executor else {})

    async def load(self, meta: dict[str, Any], archive: bytes) -> dict[str, Any]:
        if self.invoker is not None or self.executor is not None:
            message = f"{self.function} {self.version} is already loaded"
            return {"ok": False, "error": {"code": "already_loaded", "message": message}}
        try:
            if meta.get("mode") == "sandbox":
                self.executor = sandbox.Executor(meta, self.socket_path)
                self.function, self.version = str(meta.get("function") or ""), meta.get("version")
                return {"ok": True, "mode": "sandbox"}
            spec, env, concurrency, timeout_s = check_load(meta)
            extract(archive, self.code_dir)
            os.environ.update(env)
            handler = import_handler(spec, self.code_dir)
        except (Exception, SystemExit) as exc:
            traceback.print_exc()
            return {"ok": False, "error": {"code": "load_failed", "message": describe_exc(exc)}}
        self.function, self.version = str(meta.get("function") or ""), meta.get("version")
        self.invoker = Invoker(handler, self.function)
        self.concurrency, self.timeout_s = concurrency, timeout_s
        # Room for replacements forked while the workers they replace are still being reaped.
        self.slots = Slots(2 * concurrency)
        gc.freeze()  # keeps workers from dirtying the imported objects' pages
        await self.fill()
        self._start(self.watchdog())
        return {"ok": True, "workers": len(self.workers)}

    async def invoke(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     meta: dict[str, Any], body: bytes) -> tuple[bytes, bytes | None]:
        """Lend the connection to a worker; return (what to send, a frame handed back)."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        start = "warm" if self.served else "cold"
        if self.invoker is None:
            return error_frame(503, "refused", "not_loaded", "no function is loaded", start, 0.0), None
        if getattr(reader, "_buffer", b""):
            raise Closed("a second frame arrived before the first was answered")
        timeout_s = float(meta.get("timeout_s") or self.timeout_s)
        try:
            async with asyncio.timeout(timeout_s):  # covers the wait for a worker too
                chosen = await self.acquire()
        except TimeoutError:
            ms = (loop.time() - began) * 1000
            return error_frame(503, "refused", "busy", "no worker became free", start, ms), None
        meta["start"] = start
        meta["timeout_s"] = max(0.001, timeout_s - (loop.time() - began))
        self.served = True
        transport = cast(asyncio.Transport, writer.transport)
        transport.pause_reading()  # the worker reads this connection now
        try:
            return await self.lend(chosen, writer.get_extra_info("socket").fileno(),
                                   protocol.encode(meta, body))
        finally:
            if not transport.is_closing():
                transport.resume_reading()

    async def lend(self, chosen: Worker, fd: int, frame: bytes) -> tuple[bytes, bytes | None]:
        chosen.leased = True
        try:
            socket.send_fds(chosen.ctl, [CONTROL.pack(worker.TAKE, len(frame))], [fd])
        except OSError:  # it died since it was picked; nothing ran
            chosen.leased = False
            return error_frame(503, "refused", "busy", "the worker went away", "warm", 0.0), None
        chosen.writer.write(frame)
        release = asyncio.ensure_future(self.read_release(chosen))
        exited: asyncio.Future[Any] = chosen.exited
        await asyncio.wait([release, exited], return_when=asyncio.FIRST_COMPLETED)
        if release.done() and release.exception() is None:
            kind, payload = release.result()
            chosen.leased = False
            if self.workers.get(chosen.pid) is chosen:
                self.idle.put_nowait(chosen)
            if kind == worker.CLOSED:
                raise Closed("the client closed the connection")
            return b"", payload if kind == worker.PENDING else None
        release.cancel()
        return self.answer_for_dead(chosen, await chosen.exited)

    @staticmethod
    async def read_release(chosen: Worker) -> Any:
        kind, length = CONTROL.unpack(await chosen.reader.readexactly(CONTROL.size))
        return kind, await chosen.reader.readexactly(length) if length else b""

    def answer_for_dead(self, dead: Worker, status: int) -> tuple[bytes, bytes | None]:
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
        message = f"the worker running the handler {_describe_status(status)}"
        return error_frame(502, "crash", "handler_crashed", message, start, ms), None

    async def acquire(self) -> Worker:
        while True:
            if self.idle.empty() and len(self.workers) < self.concurrency:
                await self.fill()
            if self.idle.empty():
                self.ask_release()
            chosen = await self.idle.get()
            if self.workers.get(chosen.pid) is not chosen:
                continue  # retired while idle; its replacement is queued
            if chosen.reader.at_eof():
                await self.retire(chosen)  # died while idle, not yet reaped
                continue
            return chosen

    def ask_release(self) -> None:
        """Every worker holds a connection: ask one, idle ones first, to give its back."""
        leased = [w for w in self.workers.values() if w.leased]
        if leased:
            leased.sort(key=lambda w: self.slots.get(w.index)[0] != IDLE)
            leased[0].writer.write(CONTROL.pack(worker.ASK, 0))

    async def watchdog(self) -> None:
        while not self.closing:
            await asyncio.sleep(WATCHDOG_S)
            now = time.monotonic()
            for w in list(self.workers.values()):
                state, deadline, _, _ = self.slots.get(w.index)
                if state == RUNNING and now > deadline + WATCHDOG_S:
                    w.killed = True
                    _kill(w.pid)

    async def fill(self) -> None:
        while self.invoker and not self.closing and len(self.workers) < self.concurrency:
            try:
                await self.spawn(self.invoker)
            except OSError as exc:  # e.g. the pids limit; the next invoke retries
                print(f"hearth: cannot fork a worker: {exc}", file=sys.stderr)
                return

    async def spawn(self, invoker: Invoker) -> None:
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
            fds = [*self.listen_fds, *self.conn_fds, *(w.fd for w in self.children.values())]
            worker.become_worker(invoker, child, parent, fds, self.slots, index, self.timeout_s)
        child.close()
        # Registered before the first await so that concurrent fills count it.
        forked = Worker(pid, parent, index, asyncio.get_running_loop().create_future())
        self.workers[pid] = self.children[pid] = forked
        forked.reader, forked.writer = await asyncio.open_connection(sock=parent)
        self.idle.put_nowait(forked)

    async def retire(self, gone: Worker, kill: bool = False) -> str:
        """Drop a worker from the pool, reap it, fork its replacement; say how it ended."""
        if self.workers.get(gone.pid) is gone:
            del self.workers[gone.pid]
        gone.writer.close()
        if kill:
            _kill(gone.pid)
        try:
            async with asyncio.timeout(EXIT_GRACE_S):
                status = await asyncio.shield(gone.exited)
        except TimeoutError:
            _kill(gone.pid)
            status = await gone.exited
        await self.fill()
        return _describe_status(status)

    def reap(self) -> None:
        """SIGCHLD: collect every exited child, ours or orphans (we may be PID 1)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            dead = self.children.pop(pid, None)
            if dead is None:
                continue
            # Read before its slot can go to a replacement.
            dead.final = self.slots.get(dead.index)
            dead.exited.set_result(status)
            if self.workers.get(pid) is dead and not self.closing:
                self._start(self.retire(dead))

    def _start(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def shutdown(self) -> None:
        self.closing = True
        if self.executor is not None:
            self.executor.shutdown()
        for pid in self.children:
            _kill(pid)
        for child in self.children.values():
            with contextlib.suppress(ChildProcessError):
                child.exited.set_result(os.waitpid(child.pid, 0)[1])
        self.children.clear()


async def serve(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    runtime = Runtime(settings.code_dir, settings.socket_path)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGCHLD, runtime.reap)
    path = settings.socket_path
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # left by a previous run
    old_umask = os.umask(0)  # the host connects under whatever uid it has
    try:
        server = await asyncio.start_unix_server(runtime.serve_conn, path=path)
    finally:
        os.umask(old_umask)
    runtime.listen_fds = [s.fileno() for s in server.sockets]
    print(f"hearth runtime {os.getpid()} listening on {path}", file=sys.stderr)
    try:
        await stop.wait()
    finally:
        server.close()
        runtime.shutdown()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def main() -> None:
    sys.dont_write_bytecode = True  # code is imported once; a .pyc would only go stale
    asyncio.run(serve(Settings.from_env(os.environ)))


if __name__ == "__main__":
    main()
