"""The function's side of the runtime: loading its code, and calling its handler.

Stdlib only, like the rest of the runtime. The supervisor (``server.py``)
imports the handler here once, on ``load``; each forked worker then turns
request frames into an ``Event`` and a ``Context``, calls the handler
through an ``Invoker`` and shapes what it returned into a reply frame.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import io
import json
import os
import stat
import sys
import time
import traceback
import zipfile
from collections.abc import Callable
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode

from runtime import protocol

Handler = Callable[..., Any]
JSON_HEADERS = [["content-type", "application/json"]]
BODY_TYPES: dict[type, str] = {bytes: "application/octet-stream", str: "text/plain; charset=utf-8"}
RESPONSE_KEYS = frozenset({"status", "headers", "body"})


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


def error_body(code: str, message: str, **extra: str) -> bytes:
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


class LogStream(io.TextIOBase):
    """A worker's stdout or stderr: each line the function prints becomes one JSON line
    naming the request it was printed for, so `hearth logs` and the gateway's own log
    lines can be joined on the request id."""

    def __init__(self, raw: TextIO, stream: str, invoker: Invoker) -> None:
        self.raw, self.stream, self.invoker = raw, stream, invoker
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        if "\n" in self.pending:
            *lines, self.pending = self.pending.split("\n")
            for line in lines:
                self._emit(line)
        return len(text)

    def flush(self) -> None:
        if self.pending:
            line, self.pending = self.pending, ""
            self._emit(line)
        self.raw.flush()

    def _emit(self, line: str) -> None:
        entry = {"ts": round(time.time(), 3), "function": self.invoker.function,
                 "request_id": self.invoker.request_id, "stream": self.stream, "msg": line}
        self.raw.write(json.dumps(entry, ensure_ascii=False) + "\n")


class Invoker:
    """Calls the handler inside a worker, running coroutines on one private loop."""

    __slots__ = ("function", "handler", "loop", "request_id")

    def __init__(self, handler: Handler, function: str) -> None:
        self.handler, self.function = handler, function
        self.loop: asyncio.AbstractEventLoop | None = None
        self.request_id: str | None = None

    def call(self, event: Event, context: Context) -> Any:
        result = self.handler(event, context)
        if inspect.isawaitable(result):
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                asyncio.set_event_loop(self.loop)
            result = self.loop.run_until_complete(result)
        return result

    def outcome(self, meta: dict[str, Any], body: bytes) -> tuple[int, Any, bytes, str]:
        self.request_id = meta.get("id")
        try:
            result = self.call(Event(meta, body), Context(self.function, meta))
        except Exception as exc:
            print(f"hearth: request {meta.get('id')} failed", file=sys.stderr)
            traceback.print_exc()  # to the container's log
            name = type(exc).__name__
            return 500, JSON_HEADERS, error_body("handler_error", f"{name}: {exc}", type=name), "error"
        try:
            return (*_shape(result), "ok")
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            return 500, JSON_HEADERS, error_body("invalid_response", message), "error"

    def respond(self, meta: dict[str, Any], body: bytes) -> bytes:
        """Run one request and encode the whole reply frame."""
        started = time.perf_counter()
        status, headers, out, outcome = self.outcome(meta, body)
        sys.stdout.flush()  # a line printed without a newline still belongs to this request
        sys.stderr.flush()
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        reply = {"status": status, "headers": headers, "outcome": outcome,
                 "start": meta.get("start", "warm"), "duration_ms": duration_ms}
        return protocol.encode(reply, out)


def extract(archive: bytes, dest: str) -> None:
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


def import_handler(spec: str, code_dir: str) -> Handler:
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


def check_load(meta: dict[str, Any]) -> tuple[str, dict[str, str], int, float]:
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


def describe_exc(exc: BaseException) -> str:
    tail = "".join(traceback.format_exception(exc))[-1500:]
    return f"{type(exc).__name__}: {exc}\n\n{tail}"



def error_frame(status: int, outcome: str, code: str, message: str,
                start: str, duration_ms: float) -> bytes:
    meta = {"status": status, "headers": JSON_HEADERS, "outcome": outcome,
            "start": start, "duration_ms": round(duration_ms, 3)}
    return protocol.encode(meta, error_body(code, message))
