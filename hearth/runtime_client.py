"""An asyncio client for the in-container runtime's framed unix-socket protocol."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from runtime import protocol


class RuntimeUnavailable(Exception):
    """The runtime could not be reached: nothing was sent, so a retry is safe."""


class RuntimeBroken(Exception):
    """The connection failed after the request was sent: it may have run."""


class RuntimeConnection(asyncio.Protocol):
    """One persistent connection to a container's runtime; one call at a time.

    A protocol rather than a stream pair: on the gateway's hot path a frame
    is parsed straight from ``data_received`` into the waiting call's future,
    without a StreamReader's buffering and three ``readexactly`` awaits.
    """

    __slots__ = ("_buffer", "_closed", "_transport", "_waiter")

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[dict[str, Any], bytes]] | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: str, timeout_s: float = 2.0) -> RuntimeConnection:
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await asyncio.get_running_loop().create_unix_connection(cls, path)
        except (OSError, TimeoutError) as exc:
            raise RuntimeUnavailable(f"cannot connect to {path}: {exc}") from exc
        return conn

    @property
    def usable(self) -> bool:
        return not self._closed and self._transport is not None and not self._transport.is_closing()

    async def call(
        self, meta: dict[str, Any], body: bytes = b"", timeout_s: float | None = None
    ) -> tuple[dict[str, Any], bytes]:
        """Send one request frame and wait for its answer (bounded by ``timeout_s``)."""
        if not self.usable:
            raise RuntimeUnavailable("send failed: the connection is closed")
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        try:
            self._transport.write(protocol.encode(meta, body))
        except (OSError, RuntimeError) as exc:
            self._waiter = None
            self.close()
            raise RuntimeUnavailable(f"send failed: {exc}") from exc
        timer = None if timeout_s is None else loop.call_later(timeout_s, self._time_out, waiter)
        try:
            return await waiter
        except (OSError, EOFError, protocol.ProtocolError, TimeoutError) as exc:
            self.close()
            raise RuntimeBroken(f"{type(exc).__name__}: {exc}") from exc
        except asyncio.CancelledError:
            self.close()  # its answer would arrive for the next call
            raise
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        self._closed = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A unix stream transport; uvloop's do not subclass asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        # Usually the whole answer comes in one chunk: parse it in place.
        buffer = self._buffer
        frame: bytes | bytearray = data
        if buffer:
            buffer += data
            frame = buffer
        head = protocol.HEADER.size
        if len(frame) < head:
            if frame is data:
                buffer += data
            return
        meta_len, body_len = protocol.HEADER.unpack_from(frame)
        if meta_len > protocol.MAX_META_BYTES or body_len > protocol.MAX_BODY_BYTES:
            self._fail(protocol.ProtocolError(f"frame too large: meta={meta_len} body={body_len}"))
            return
        end = head + meta_len + body_len
        if len(frame) < end:
            if frame is data:
                buffer += data
            return
        waiter = self._waiter
        if waiter is None or waiter.done() or len(frame) > end:
            # An answer nobody asked for, or more than one: the peer is confused.
            self._fail(protocol.ProtocolError("unexpected data from the runtime"))
            return
        raw = data
        if frame is buffer:
            raw = bytes(buffer)
            buffer.clear()
        try:
            meta = protocol.decode_meta(raw[head : head + meta_len])
        except protocol.ProtocolError as exc:
            self._fail(exc)
            return
        waiter.set_result((meta, raw[head + meta_len :] if body_len else b""))

    def eof_received(self) -> bool:
        self._fail(EOFError("the runtime closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or EOFError("the runtime closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def _time_out(self, waiter: asyncio.Future[tuple[dict[str, Any], bytes]]) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError("no answer in time"))


async def call_once(
    path: str, meta: dict[str, Any], body: bytes = b"", timeout_s: float = 5.0
) -> tuple[dict[str, Any], bytes]:
    """Open, call, close: for control operations (load, health) off the hot path."""
    conn = await RuntimeConnection.open(path, timeout_s)
    try:
        return await conn.call(meta, body, timeout_s)
    finally:
        conn.close()
