"""The wire format between Hearth's processes and the in-container runtime.

Stdlib only: this file is copied into the runtime image, where only the
Python standard library is available. It is also imported by the gateway
and the pool manager so both sides share one definition.

A frame is an 8-byte header ``struct("!II") = (meta_len, body_len)``, then
``meta_len`` bytes of a UTF-8 JSON object, then ``body_len`` raw bytes.
A connection carries one request frame and one response frame at a time,
and stays open for the next (persistent, no HTTP parsing on the hot path).

Requests carry ``meta["op"]``:

- ``health``: answered with ``{"ok": true, "function": name | null,
  "version": str | null, "workers": n, "busy": n, "pid": n}``.
- ``load``: meta ``{"function", "version", "handler", "env", "concurrency",
  "timeout_s"}``, body a zip archive of the function's code. Answered with
  ``{"ok": true}`` or ``{"ok": false, "error": {"code", "message"}}``; a
  second load is refused with code ``already_loaded``.
- ``invoke``: meta ``{"id", "call_id", "method", "path", "query",
  "headers": [[k, v], ...], "timeout_s"}``, body the request body. Answered
  with ``{"status", "headers": [[k, v], ...], "outcome", "start",
  "duration_ms"}`` and the response body. ``outcome`` is one of
  ``OUTCOMES``; ``REFUSED_OUTCOMES`` mean the request never reached the
  handler, so a caller may safely retry it elsewhere.
- ``load`` with ``mode: "sandbox"`` (and optional maxima ``max_runs``,
  ``max_timeout_s``, ``max_memory_mb``, ``max_output_bytes``,
  ``processes``) makes the runtime the /execute sandbox instead: no code
  is loaded, and ``health`` adds ``{"mode", "runs", "recycle",
  "landlock_abi"}`` (``ok`` turns false once it wants replacing).
- ``execute`` (sandbox only): body JSON ``{"code", "stdin", "args",
  "files": [{"name", "content", "encoding"}], "timeout_s", "memory_mb",
  "output_limit_bytes"}`` -- in the body, not the meta, as it can exceed
  the meta limit. Answered with meta ``{"outcome": "ok", "status",
  "exit_code", "signal", "timed_out", "truncated", "duration_ms",
  "stdout_bytes", "recycle", "max_rss_kb", "cpu_ms"}`` and a body of
  stdout then stderr (split at ``stdout_bytes``); ``status`` is one of
  ok, error, timeout, memory, output_limit. ``recycle`` true: this
  container hit a limit or its run quota and refuses further runs
  (``outcome`` "refused", again with ``recycle`` true), so the caller
  should route around it and have it replaced. A malformed body answers
  ``{"outcome": "error", "error": {...}}``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

try:  # faster on the host; the container has the stdlib only
    import orjson

    def _dumps(meta: dict[str, Any]) -> bytes:
        return orjson.dumps(meta)

    def _loads(data: bytes) -> Any:
        return orjson.loads(data)

except ImportError:  # pragma: no cover - exercised inside the container

    def _dumps(meta: dict[str, Any]) -> bytes:
        return json.dumps(meta, separators=(",", ":")).encode()

    def _loads(data: bytes) -> Any:
        return json.loads(data)


HEADER = struct.Struct("!II")
MAX_META_BYTES = 1 << 20
MAX_BODY_BYTES = 64 << 20

OUTCOMES = ("ok", "error", "timeout", "crash", "refused")
# The runtime refused before any user code saw the request.
REFUSED_OUTCOMES = frozenset({"refused"})

SOCKET_NAME = "runtime.sock"
CONTAINER_SOCKET_DIR = "/hearth/sock"


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


def encode(meta: dict[str, Any], body: bytes = b"") -> bytes:
    raw = _dumps(meta)
    return HEADER.pack(len(raw), len(body)) + raw + body


def _check_sizes(meta_len: int, body_len: int) -> None:
    if meta_len > MAX_META_BYTES or body_len > MAX_BODY_BYTES:
        raise ProtocolError(f"frame too large: meta={meta_len} body={body_len}")


def decode_meta(raw: bytes) -> dict[str, Any]:
    try:
        meta = _loads(raw)
    except ValueError as exc:
        raise ProtocolError(f"bad frame meta: {exc}") from exc
    if not isinstance(meta, dict):
        raise ProtocolError("frame meta is not an object")
    return meta


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    """Read one frame; raises ``asyncio.IncompleteReadError`` on EOF."""
    meta_len, body_len = HEADER.unpack(await reader.readexactly(HEADER.size))
    _check_sizes(meta_len, body_len)
    meta = decode_meta(await reader.readexactly(meta_len))
    body = await reader.readexactly(body_len) if body_len else b""
    return meta, body


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError("peer closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    """Blocking read of one frame; raises ``EOFError`` on EOF."""
    meta_len, body_len = HEADER.unpack(recv_exactly(sock, HEADER.size))
    _check_sizes(meta_len, body_len)
    meta = decode_meta(recv_exactly(sock, meta_len))
    body = recv_exactly(sock, body_len) if body_len else b""
    return meta, body


def send_frame(sock: socket.socket, meta: dict[str, Any], body: bytes = b"") -> None:
    sock.sendall(encode(meta, body))
