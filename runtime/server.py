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
import importlib
import inspect
import io
import json
import os
import resource
import signal
import socket
import stat
import sys
import time
import traceback
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode

from runtime import protocol

Handler = Callable[..., Any]
JSON_HEADERS = [["content-type", "application/json"]]
BODY_TYPES: dict[type, str] = {bytes: "application/octet-stream", str: "text/plain; charset=utf-8"}
RESPONSE_KEYS = frozenset({"status", "headers", "body"})
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


class Headers(dict[str, str]):
    """Request headers: keys are stored lowercase and looked up case-insensitively."""

    __slots__ = ()

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class Event:
    """One HTTP request as the handler sees it."""

    __slots__ = ("body", "headers", "method", "path", "query", "query_string")

    def __init__(self, meta: dict[str, Any], body: bytes) -> None:
        self.method: str = meta.get("method") or "GET"
        path = meta.get("path") or "/"
        self.path: str = path if path.startswith("/") else "/" + path
        self.query, self.query_string = _parse_query(meta.get("query"))
        self.headers = Headers()
        for key, value in meta.get("headers") or ():
            key = key.lower()
            self.headers[key] = f"{self.headers[key]}, {value}" if key in self.headers else value
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


class Context:
    """Facts about the invocation that are not part of the request."""

    __slots__ = ("call_id", "deadline", "function_name", "request_id")

    def __init__(self, function_name: str, meta: dict[str, Any]) -> None:
        self.function_name = function_name
        self.request_id: str | None = meta.get("id")
        self.call_id: str | None = meta.get("call_id")
        self.deadline: float = meta.get("deadline") or time.time() + 30.0

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.time())


def _parse_query(raw: Any) -> tuple[dict[str, str], str]:
    # The gateway sends the raw query string; a ready mapping is accepted too.
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}, urlencode(raw)
    return dict(parse_qsl(raw or "", keep_blank_values=True)), raw or ""


def _error_body(code: str, message: str, **extra: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, **extra}}).encode()


def _encode_body(value: Any) -> tuple[bytes, str | None]:
    if value is None:
        return b"", None
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":")).encode(), "application/json"
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    ctype = BODY_TYPES.get(type(value))
    if ctype is None:
        raise TypeError(f"cannot send a {type(value).__name__} as a response body")
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > protocol.MAX_BODY_BYTES:
        raise ValueError(f"a {len(raw)}-byte body is over the frame limit")
    return raw, ctype


def _shape(result: Any) -> tuple[int, list[list[str]], bytes]:
    """Turn what a handler returned into (status, headers, body)."""
    if result is None:
        return 204, [], b""
    status = result.get("status") if isinstance(result, dict) else None
    if type(status) is not int or not RESPONSE_KEYS.issuperset(result):
        body, ctype = _encode_body(result)
        return 200, [["content-type", ctype or ""]], body
    if not 100 <= status <= 599:
        raise ValueError(f"status {status} is not an HTTP status")
    raw = result.get("headers") or {}
    headers = [[str(k), str(v)] for k, v in (raw.items() if isinstance(raw, dict) else raw)]
    body, ctype = _encode_body(result.get("body"))
    if ctype and not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(["content-type", ctype])
    return status, headers, body


class Invoker:
    """Calls the handler inside a worker, running coroutines on one private loop."""

    __slots__ = ("function", "handler", "loop")

    def __init__(self, handler: Handler, function: str) -> None:
        self.handler, self.function = handler, function
        self.loop: asyncio.AbstractEventLoop | None = None

    def call(self, event: Event, context: Context) -> Any:
        result = self.handler(event, context)
        if inspect.isawaitable(result):
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                asyncio.set_event_loop(self.loop)
            result = self.loop.run_until_complete(result)
        return result

    def outcome(self, meta: dict[str, Any], body: bytes) -> tuple[int, Any, bytes, str]:
        try:
            result = self.call(Event(meta, body), Context(self.function, meta))
        except Exception as exc:
            print(f"hearth: request {meta.get('id')} failed", file=sys.stderr)
            traceback.print_exc()  # to the container's log
            name = type(exc).__name__
            return 500, JSON_HEADERS, _error_body("handler_error", f"{name}: {exc}", type=name), "error"
        try:
            return (*_shape(result), "ok")
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            return 500, JSON_HEADERS, _error_body("invalid_response", message), "error"

    def respond(self, meta: dict[str, Any], body: bytes) -> bytes:
        """Run one request and encode the whole reply frame."""
        started = time.perf_counter()
        status, headers, out, outcome = self.outcome(meta, body)
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        reply = {"status": status, "headers": headers, "outcome": outcome,
                 "start": meta.get("start", "warm"), "duration_ms": duration_ms}
        return protocol.encode(reply, out)

    def serve(self, sock: socket.socket) -> None:
        while True:
            try:
                meta, body = protocol.recv_frame(sock)
            except EOFError:
                return
            sock.sendall(self.respond(meta, body))  # one write: no delayed-ACK stall


def _extract(archive: bytes, dest: str) -> None:
    """Unpack a zip, refusing any entry that could land outside ``dest``."""
    os.makedirs(dest, exist_ok=True)
    root = os.path.realpath(dest)
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        for info in zf.infolist():
            name = info.filename
            target = os.path.realpath(os.path.join(root, name))
            if (name.startswith("/") or ".." in name.split("/")
                    or stat.S_ISLNK(info.external_attr >> 16)
                    or not (target + os.sep).startswith(root + os.sep)):
                raise ValueError(f"unsafe path in archive: {name!r}")
        zf.extractall(root)


def _import_handler(spec: str, code_dir: str) -> Handler:
    module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"handler {spec!r} is not 'module.attribute'")
    if code_dir in sys.path:
        sys.path.remove(code_dir)
    sys.path.insert(0, code_dir)
    # A failed load may have left half-imported modules behind; a retry must
    # see the new files, not those.
    prefix = os.path.join(code_dir, "")
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(prefix):
            del sys.modules[name]
    importlib.invalidate_caches()
    handler = getattr(importlib.import_module(module_name), attr)
    if not callable(handler):
        raise TypeError(f"{spec} is a {type(handler).__name__}, not a function")
    return handler


def _check_load(meta: dict[str, Any]) -> tuple[str, dict[str, str], int, float]:
    handler, env = meta.get("handler") or "main.handle", meta.get("env") or {}
    concurrency, timeout_s = meta.get("concurrency", 1), meta.get("timeout_s") or 30.0
    if not isinstance(handler, str):
        raise ValueError("handler must be a string")
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ValueError("env must map names to strings")
    if type(concurrency) is not int or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, not {concurrency!r}")
    if not isinstance(timeout_s, int | float) or timeout_s <= 0:
        raise ValueError(f"timeout_s must be a positive number, not {timeout_s!r}")
    return handler, env, concurrency, float(timeout_s)


def _describe_exc(exc: BaseException) -> str:
    tail = "".join(traceback.format_exception(exc))[-1500:]
    return f"{type(exc).__name__}: {exc}\n\n{tail}"


def _describe_status(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exited with status {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def _error_frame(status: int, outcome: str, code: str, message: str,
                 start: str, duration_ms: float) -> bytes:
    meta = {"status": status, "headers": JSON_HEADERS, "outcome": outcome,
            "start": start, "duration_ms": round(duration_ms, 3)}
    return protocol.encode(meta, _error_body(code, message))


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

    def __init__(self, code_dir: str) -> None:
        self.code_dir = code_dir
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
        fd = writer.get_extra_info("socket").fileno()
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
        return {"ok": True, "function": self.function, "version": self.version,
                "workers": len(self.workers), "busy": self.busy, "pid": os.getpid()}

    async def load(self, meta: dict[str, Any], archive: bytes) -> dict[str, Any]:
        if self.invoker is not None:
            message = f"{self.function} {self.version} is already loaded"
            return {"ok": False, "error": {"code": "already_loaded", "message": message}}
        try:
            spec, env, concurrency, timeout_s = _check_load(meta)
            _extract(archive, self.code_dir)
            os.environ.update(env)
            handler = _import_handler(spec, self.code_dir)
        except (Exception, SystemExit) as exc:
            traceback.print_exc()
            return {"ok": False, "error": {"code": "load_failed", "message": _describe_exc(exc)}}
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
            return _error_frame(503, "refused", "not_loaded", "no function is loaded", start, 0.0)
        timeout_s = float(meta.get("timeout_s") or self.timeout_s)
        deadline = began + timeout_s  # covers the wait for a worker too
        try:
            async with asyncio.timeout_at(deadline):
                worker = await self.acquire()
        except TimeoutError:
            ms = (loop.time() - began) * 1000
            start = "warm" if self.served else "cold"
            return _error_frame(503, "refused", "busy", "no worker became free", start, ms)
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
            return _error_frame(504, "timeout", "timeout", message, meta["start"], ms)
        except (OSError, EOFError):
            how = await self.retire(worker)
            ms = (asyncio.get_running_loop().time() - began) * 1000
            message = f"the worker running the handler {how}"
            return _error_frame(502, "crash", "handler_crashed", message, meta["start"], ms)
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
            self.become_worker(invoker, parent, child)
        child.close()
        # Registered before the first await so that concurrent fills count it.
        worker = Worker(pid, parent.fileno(), asyncio.get_running_loop().create_future())
        self.workers[pid] = self.children[pid] = worker
        worker.reader, worker.writer = await asyncio.open_connection(sock=parent)
        self.idle.put_nowait(worker)

    def become_worker(self, invoker: Invoker, parent: socket.socket,
                      child: socket.socket) -> NoReturn:
        code = 1
        try:
            parent.close()
            # Copies of the supervisor's sockets would keep peers from seeing EOF.
            for fd in [*self.listen_fds, *self.conn_fds, *(w.fd for w in self.workers.values())]:
                with contextlib.suppress(OSError):
                    os.close(fd)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            asyncio.events._set_running_loop(None)  # 3.11 does not reset it on fork
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash must not dump core
            invoker.serve(child)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

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
        for pid in self.children:
            _kill(pid)
        for worker in self.children.values():
            with contextlib.suppress(ChildProcessError):
                worker.exited.set_result(os.waitpid(worker.pid, 0)[1])
        self.children.clear()


async def serve(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    runtime = Runtime(settings.code_dir)
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
