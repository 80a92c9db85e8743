"""An asyncio client for the in-container runtime's framed unix-socket protocol."""

from __future__ import annotations

import asyncio
from typing import Any

from runtime import protocol


class RuntimeUnavailable(Exception):
    """The runtime could not be reached: nothing was sent, so a retry is safe."""


class RuntimeBroken(Exception):
    """The connection failed after the request was sent: it may have run."""


class RuntimeConnection:
    """One persistent connection to a container's runtime; one call at a time."""

    __slots__ = ("_reader", "_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, path: str, timeout_s: float = 2.0) -> RuntimeConnection:
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)
        except (OSError, TimeoutError) as exc:
            raise RuntimeUnavailable(f"cannot connect to {path}: {exc}") from exc
        return cls(reader, writer)

    @property
    def usable(self) -> bool:
        return not (self._writer.is_closing() or self._reader.at_eof())

    async def call(
        self, meta: dict[str, Any], body: bytes = b"", timeout_s: float | None = None
    ) -> tuple[dict[str, Any], bytes]:
        """Send one request frame and wait for its answer (bounded by ``timeout_s``)."""
        try:
            self._writer.write(protocol.encode(meta, body))
        except (OSError, RuntimeError) as exc:
            self.close()
            raise RuntimeUnavailable(f"send failed: {exc}") from exc
        try:
            async with asyncio.timeout(timeout_s):
                return await protocol.read_frame(self._reader)
        except (OSError, asyncio.IncompleteReadError, protocol.ProtocolError, TimeoutError) as exc:
            self.close()
            raise RuntimeBroken(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()


async def call_once(
    path: str, meta: dict[str, Any], body: bytes = b"", timeout_s: float = 5.0
) -> tuple[dict[str, Any], bytes]:
    """Open, call, close: for control operations (load, health) off the hot path."""
    conn = await RuntimeConnection.open(path, timeout_s)
    try:
        return await conn.call(meta, body, timeout_s)
    finally:
        conn.close()
