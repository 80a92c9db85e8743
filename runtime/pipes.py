"""Non-blocking pipe ends on the supervisor's event loop: capped capture, fire-and-forget feed.

Stdlib only. Raw ``add_reader``/``add_writer`` callbacks rather than
asyncio transports: a run opens four pipes, and their set-up cost is on
every /execute's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

READ_CHUNK_BYTES = 1 << 16


class Capture:
    """Reads one pipe to EOF, keeping at most ``limit_bytes``; calls ``on_overflow`` once past it."""

    def __init__(self, fd: int, limit_bytes: int, on_overflow: Callable[[], None]) -> None:
        self.fd, self.limit_bytes, self.on_overflow = fd, limit_bytes, on_overflow
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False
        self.loop = asyncio.get_running_loop()
        self.eof = self.loop.create_future()
        os.set_blocking(fd, False)
        self.loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, READ_CHUNK_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        room = self.limit_bytes - self.size
        if len(data) > room:
            data = data[:room]
            if not self.truncated:
                self.truncated = True
                self.on_overflow()
        if data:
            self.chunks.append(data)
            self.size += len(data)

    async def finish(self, timeout_s: float) -> bytes:
        """Everything read, once the writers are gone (or after ``timeout_s``)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.eof), timeout_s)
        self.close()
        return b"".join(self.chunks)

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
        if not self.eof.done():
            self.eof.set_result(None)


class Feed:
    """Writes ``data`` into a pipe as the reader takes it, then closes it (EOF)."""

    def __init__(self, fd: int, data: bytes) -> None:
        self.fd, self.view = fd, memoryview(data)
        self.loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        self.watching = False
        self._writable()

    def _writable(self) -> None:
        while self.view:
            try:
                written = os.write(self.fd, self.view[:READ_CHUNK_BYTES])
            except BlockingIOError:
                if not self.watching:
                    self.watching = True
                    self.loop.add_writer(self.fd, self._writable)
                return
            except OSError:  # the reader exited without reading it all
                break
            self.view = self.view[written:]
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            if self.watching:
                self.loop.remove_writer(self.fd)
            os.close(self.fd)
            self.fd = -1
