"""The in-container runtime: loads one function and runs its invocations.

Stdlib only. One asyncio supervisor owns the unix socket, answers ``health``
at once, imports the function on ``load`` and then forks ``concurrency``
workers from itself, so every worker starts with the code already imported.
A worker serves one request at a time over a socketpair with blocking
calls; the supervisor forwards its reply frame untouched. A worker that
overruns its deadline is killed, and one that dies is reaped; either way a
fresh one is forked from the loaded supervisor in about a millisecond.
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
from typing import Any

from runtime import protocol, sandbox
from runtime.handler import (
    Invoker,
    become_worker,
    check_load,
    describe_exc,
    error_frame,
    extract,
    import_handler,
)

# A worker that closed its socket but did not exit gets this long before SIGKILL.
EXIT_GRACE_S = 1.0


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

    __slots__ = ("exited", "fd", "pid", "reader", "writer")

    def __init__(self, pid: int, fd: int, exited: asyncio.Future[int]) -> None:
        self.pid, self.fd, self.exited = pid, fd, exited
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
        self.busy = 0
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
        try:
            while True:
                try:
                    meta, body = await protocol.read_frame(reader)
                except (EOFError, ConnectionError, protocol.ProtocolError):
                    return
                op = meta.get("op")
                if op == "invoke":
                    writer.write(await self.invoke(meta, body))
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
        except asyncio.CancelledError:
            return  # shutdown; 3.11 would log a cancelled connection task as an error
        finally:
            self.conn_fds.discard(fd)
            writer.close()

    def health(self) -> dict[str, Any]:
        answer = {"ok": True, "function": self.function, "version": self.version,
                  "workers": len(self.workers), "busy": self.busy, "pid": os.getpid()}
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
        gc.freeze()  # keeps workers from dirtying the imported objects' pages
        await self.fill()
        return {"ok": True, "workers": len(self.workers)}

    async def invoke(self, meta: dict[str, Any], body: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        began = loop.time()
        if self.invoker is None:
            start = "warm" if self.served else "cold"
            return error_frame(503, "refused", "not_loaded", "no function is loaded", start, 0.0)
        timeout_s = float(meta.get("timeout_s") or self.timeout_s)
        deadline = began + timeout_s  # covers the wait for a worker too
        try:
            async with asyncio.timeout_at(deadline):
                worker = await self.acquire()
        except TimeoutError:
            ms = (loop.time() - began) * 1000
            start = "warm" if self.served else "cold"
            return error_frame(503, "refused", "busy", "no worker became free", start, ms)
        start = meta["start"] = "warm" if self.served else "cold"
        self.served = True
        meta["deadline"] = time.time() + deadline - loop.time()
        self.busy += 1
        try:
            return await self.run(worker, meta, body, deadline, timeout_s)
        finally:
            self.busy -= 1

    async def run(self, worker: Worker, meta: dict[str, Any], body: bytes,
                  deadline: float, timeout_s: float) -> bytes:
        began = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout_at(deadline):
                worker.writer.write(protocol.encode(meta, body))
                head = await worker.reader.readexactly(protocol.HEADER.size)
                meta_len, body_len = protocol.HEADER.unpack(head)
                frame = head + await worker.reader.readexactly(meta_len + body_len)
        except TimeoutError:
            await self.retire(worker, kill=True)
            ms = (asyncio.get_running_loop().time() - began) * 1000
            message = f"the handler ran past its {timeout_s:g} s deadline"
            return error_frame(504, "timeout", "timeout", message, meta["start"], ms)
        except (OSError, EOFError):
            how = await self.retire(worker)
            ms = (asyncio.get_running_loop().time() - began) * 1000
            message = f"the worker running the handler {how}"
            return error_frame(502, "crash", "handler_crashed", message, meta["start"], ms)
        if self.workers.get(worker.pid) is worker:
            self.idle.put_nowait(worker)
        return frame

    async def acquire(self) -> Worker:
        while True:
            if self.idle.empty() and len(self.workers) < self.concurrency:
                await self.fill()
            worker = await self.idle.get()
            if self.workers.get(worker.pid) is not worker:
                continue  # retired while idle; its replacement is queued
            if worker.reader.at_eof():
                await self.retire(worker)  # died while idle, not yet reaped
                continue
            return worker

    async def fill(self) -> None:
        while self.invoker and not self.closing and len(self.workers) < self.concurrency:
            try:
                await self.spawn(self.invoker)
            except OSError as exc:  # e.g. the pids limit; the next invoke retries
                print(f"hearth: cannot fork a worker: {exc}", file=sys.stderr)
                return

    async def spawn(self, invoker: Invoker) -> None:
        parent, child = socket.socketpair()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            # Copies of the supervisor's sockets would keep peers from seeing EOF.
            fds = [*self.listen_fds, *self.conn_fds, *(w.fd for w in self.workers.values())]
            become_worker(invoker, child, parent, fds)
        child.close()
        # Registered before the first await so that concurrent fills count it.
        worker = Worker(pid, parent.fileno(), asyncio.get_running_loop().create_future())
        self.workers[pid] = self.children[pid] = worker
        worker.reader, worker.writer = await asyncio.open_connection(sock=parent)
        self.idle.put_nowait(worker)

    async def retire(self, worker: Worker, kill: bool = False) -> str:
        """Drop a worker from the pool, reap it, fork its replacement; say how it ended."""
        if self.workers.get(worker.pid) is worker:
            del self.workers[worker.pid]
        worker.writer.close()
        if kill:
            _kill(worker.pid)
        try:
            async with asyncio.timeout(EXIT_GRACE_S):
                status = await asyncio.shield(worker.exited)
        except TimeoutError:
            _kill(worker.pid)
            status = await worker.exited
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
            worker = self.children.pop(pid, None)
            if worker is None:
                continue
            worker.exited.set_result(status)
            if self.workers.get(pid) is worker and not self.closing:
                task = asyncio.get_running_loop().create_task(self.retire(worker))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    def shutdown(self) -> None:
        self.closing = True
        if self.executor is not None:
            self.executor.shutdown()
        for pid in self.children:
            _kill(pid)
        for worker in self.children.values():
            with contextlib.suppress(ChildProcessError):
                worker.exited.set_result(os.waitpid(worker.pid, 0)[1])
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
