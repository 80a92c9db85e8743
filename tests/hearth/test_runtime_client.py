"""The runtime client against a scripted peer on a real unix socket: framing, timeouts, failures."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hearth.runtime_client import RuntimeBroken, RuntimeConnection, RuntimeUnavailable, call_once
from runtime import protocol


class Peer:
    """Answers each frame as ``mode`` says: echo (body tripled), split, silent, close, double,
    huge; or hangs up at once (hangup)."""

    def __init__(self) -> None:
        self.mode = "echo"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while self.mode != "hangup":
                meta, body = await protocol.read_frame(reader)
                frame = protocol.encode({"ok": True, "n": meta.get("n")}, body * 3)
                if self.mode == "echo":
                    writer.write(frame)
                elif self.mode == "split":  # a byte at a time: the client must reassemble
                    for i in range(len(frame)):
                        writer.write(frame[i : i + 1])
                        await writer.drain()
                        await asyncio.sleep(0)
                elif self.mode == "close":
                    break
                elif self.mode == "double":
                    writer.write(frame + frame)
                elif self.mode == "huge":
                    writer.write(struct.pack("!II", protocol.MAX_META_BYTES + 1, 0))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[tuple[Peer, str]]:
    p = Peer()
    path = str(tmp_path / "rt.sock")
    server = await asyncio.start_unix_server(p.serve, path)
    yield p, path
    server.close()
    await server.wait_closed()


async def test_calls_reuse_one_connection_whole_or_split(peer: tuple[Peer, str]) -> None:
    p, path = peer
    conn = await RuntimeConnection.open(path)
    assert await conn.call({"n": 1}, b"ab", 2) == ({"ok": True, "n": 1}, b"ababab")
    big = bytes(range(256)) * 8192  # 2 MiB: many chunks
    assert await conn.call({"n": 2}, big, 5) == ({"ok": True, "n": 2}, big * 3)
    p.mode = "split"
    assert await conn.call({"n": 3}, b"xyz", 5) == ({"ok": True, "n": 3}, b"xyzxyzxyz")
    assert await conn.call({"n": 4}, b"", 5) == ({"ok": True, "n": 4}, b"")
    assert conn.usable
    conn.close()
    assert not conn.usable


async def test_silence_past_the_timeout_breaks_the_connection(peer: tuple[Peer, str]) -> None:
    p, path = peer
    p.mode = "silent"
    conn = await RuntimeConnection.open(path)
    with pytest.raises(RuntimeBroken) as caught:
        await conn.call({"n": 1}, b"", 0.1)
    assert isinstance(caught.value.__cause__, TimeoutError)  # the dispatcher trips the breaker on this
    assert not conn.usable
    with pytest.raises(RuntimeUnavailable):  # nothing is sent on a closed connection
        await conn.call({"n": 2}, b"", 1)


@pytest.mark.parametrize("mode", ["close", "double", "huge"])
async def test_a_misbehaving_peer_breaks_the_call(peer: tuple[Peer, str], mode: str) -> None:
    p, path = peer
    p.mode = mode
    conn = await RuntimeConnection.open(path)
    with pytest.raises(RuntimeBroken):
        await conn.call({"n": 1}, b"", 2)
    assert not conn.usable


async def test_a_cancelled_call_closes_the_connection(peer: tuple[Peer, str]) -> None:
    p, path = peer
    p.mode = "silent"
    conn = await RuntimeConnection.open(path)
    task = asyncio.create_task(conn.call({"n": 1}, b"", 5))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not conn.usable  # a late answer must not be read as the next call's


async def test_an_idle_connection_closed_by_the_peer_is_not_usable(peer: tuple[Peer, str]) -> None:
    p, path = peer
    p.mode = "hangup"
    conn = await RuntimeConnection.open(path)
    for _ in range(100):  # bounded: the hang-up arrives within a few loop turns
        if not conn.usable:
            break
        await asyncio.sleep(0.01)
    assert not conn.usable  # the gateway's pool drops it instead of sending into it
    p.mode = "echo"
    assert await call_once(path, {"n": 2}, b"a") == ({"ok": True, "n": 2}, b"aaa")


async def test_no_socket_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(RuntimeUnavailable):
        await RuntimeConnection.open(str(tmp_path / "missing.sock"), 1)
