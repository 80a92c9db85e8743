"""The in-container runtime: loads one function and runs its invocations.

Stdlib only. One asyncio supervisor owns the unix socket, answers ``health``
at once, imports the function on ``load`` and then forks ``concurrency``
workers from itself (``workers.py``), so every worker starts with the code
already imported. A connection's first ``invoke`` lends the connection
itself to an idle worker (``worker.py``), which then serves the client
directly until it gives the connection back. A worker that overruns its
deadline is killed, and one that dies is reaped; the supervisor answers the
request it was running (504 or 502) and forks a fresh worker from the
loaded supervisor in about a millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from runtime import protocol, sandbox, worker
from runtime.handler import Invoker, check_load, describe_exc, error_frame, extract, import_handler
from runtime.workers import Closed, Workers


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


class Runtime:
    """The supervisor: one loaded function, its workers, and the client connections."""

    def __init__(self, code_dir: str, socket_path: str = "") -> None:
        self.code_dir, self.socket_path = code_dir, socket_path
        self.executor: sandbox.Executor | None = None  # set by a load in sandbox mode
        self.function: str | None = None
        self.version: str | None = None
        self.workers: Workers | None = None  # set by a load of a function
        self.served = False
        self.conn_fds: set[int] = set()
        self.listen_fds: list[int] = []

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
            writer.close()
            # The socket closes a loop turn later. Until it has, a worker forked
            # meanwhile must still close its copy, or it would hold the
            # connection open and the client would never see it end.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            self.conn_fds.discard(fd)

    def health(self) -> dict[str, Any]:
        pool = self.workers
        answer = {"ok": True, "function": self.function, "version": self.version,
                  "workers": len(pool.live) if pool else 0, "busy": pool.busy() if pool else 0,
                  "pid": os.getpid()}
        return answer | (self.executor.health() if self.executor else {})

    async def load(self, meta: dict[str, Any], archive: bytes) -> dict[str, Any]:
        if self.workers is not None or self.executor is not None:
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
        self.workers = Workers(Invoker(handler, self.function), concurrency, timeout_s,
                               lambda: [*self.listen_fds, *self.conn_fds])
        gc.freeze()  # keeps workers from dirtying the imported objects' pages
        await self.workers.fill()
        self.workers.start(self.workers.watchdog())
        return {"ok": True, "workers": len(self.workers.live)}

    async def invoke(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     meta: dict[str, Any], body: bytes) -> tuple[bytes, bytes | None]:
        """Lend the connection to a worker; return (what to send, a frame handed back)."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        start = "warm" if self.served else "cold"
        if self.workers is None:
            return error_frame(503, "refused", "not_loaded", "no function is loaded", start, 0.0), None
        if getattr(reader, "_buffer", b""):
            raise Closed("a second frame arrived before the first was answered")
        timeout_s = float(meta.get("timeout_s") or self.workers.timeout_s)
        try:
            async with asyncio.timeout(timeout_s):  # covers the wait for a worker too
                chosen = await self.workers.acquire()
        except TimeoutError:
            ms = (loop.time() - began) * 1000
            return error_frame(503, "refused", "busy", "no worker became free", start, ms), None
        meta["start"] = start
        meta["timeout_s"] = max(0.001, timeout_s - (loop.time() - began))
        self.served = True
        transport = cast(asyncio.Transport, writer.transport)
        transport.pause_reading()  # the worker reads this connection now
        try:
            return await self.workers.lend(chosen, writer.get_extra_info("socket").fileno(),
                                           protocol.encode(meta, body))
        finally:
            if not transport.is_closing():
                transport.resume_reading()

    def reap(self) -> None:
        """SIGCHLD: collect every exited child, ours or orphans (we may be PID 1)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.workers is not None:
                self.workers.on_exit(pid, status)

    def shutdown(self) -> None:
        if self.executor is not None:
            self.executor.shutdown()
        if self.workers is not None:
            self.workers.shutdown()


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
