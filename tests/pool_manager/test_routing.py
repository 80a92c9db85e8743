"""The versioned routing table and its long-poll."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from pool_manager.routing import RoutingTable

SHORT_S = 0.05
LONG_S = 30.0  # a timeout no test reaches


def table_of(encoded: bytes) -> dict[str, Any]:
    data = orjson.loads(encoded)
    assert set(data) == {"version", "functions"}
    return data


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def fn(version: str, *sockets: str) -> dict[str, Any]:
    return {"version": version, "containers": [{"socket": s} for s in sockets]}


async def test_starts_empty_at_a_clock_version() -> None:
    before_ms = int(time.time() * 1000)
    table = RoutingTable()
    after_ms = int(time.time() * 1000)
    assert before_ms <= table.version <= after_ms
    assert table_of(table.encoded) == {"version": table.version, "functions": {}}


async def test_a_later_table_starts_at_or_above_an_earlier_one() -> None:
    first = RoutingTable()
    second = RoutingTable()
    assert second.version >= first.version


async def test_publish_of_a_change_bumps_the_version() -> None:
    table = RoutingTable()
    v0 = table.version
    assert table.publish({"echo": fn("v1", "a")}) is True
    assert table.version == v0 + 1
    assert table_of(table.encoded) == {"version": v0 + 1, "functions": {"echo": fn("v1", "a")}}
    assert table.publish({"echo": fn("v1", "a", "b")}) is True
    assert table.version == v0 + 2
    assert table.publish({}) is True
    assert table.version == v0 + 3
    assert table_of(table.encoded)["functions"] == {}


async def test_publish_of_an_identical_table_keeps_the_version() -> None:
    table = RoutingTable()
    table.publish({"echo": fn("v1", "a"), "other": fn("v2")})
    version, encoded = table.version, table.encoded
    # an equal table built afresh, in another key order
    assert table.publish({"other": fn("v2"), "echo": fn("v1", "a")}) is False
    assert table.version == version
    assert table.encoded == encoded


async def test_publish_of_an_empty_table_at_start_is_no_change() -> None:
    table = RoutingTable()
    v0 = table.version
    assert table.publish({}) is False
    assert table.version == v0


async def test_wait_newer_returns_at_once_when_already_newer() -> None:
    table = RoutingTable()
    table.publish({"echo": fn("v1")})
    loop = asyncio.get_running_loop()
    started = loop.time()
    encoded = await table.wait_newer(table.version - 1, LONG_S)
    assert loop.time() - started < 1.0
    assert table_of(encoded)["version"] == table.version
    assert table_of(encoded)["functions"] == {"echo": fn("v1")}


async def test_wait_newer_waits_for_a_publish() -> None:
    table = RoutingTable()
    v0 = table.version
    task = asyncio.create_task(table.wait_newer(v0, LONG_S))
    await settle()
    assert not task.done()
    table.publish({"echo": fn("v1")})
    encoded = await asyncio.wait_for(task, 1.0)
    assert table_of(encoded) == {"version": v0 + 1, "functions": {"echo": fn("v1")}}


async def test_identical_publish_does_not_wake_waiters() -> None:
    table = RoutingTable()
    table.publish({"echo": fn("v1")})
    task = asyncio.create_task(table.wait_newer(table.version, LONG_S))
    await settle()
    table.publish({"echo": fn("v1")})
    await settle()
    assert not task.done()
    table.publish({"echo": fn("v2")})
    encoded = await asyncio.wait_for(task, 1.0)
    assert table_of(encoded)["functions"] == {"echo": fn("v2")}


async def test_every_waiter_wakes_on_a_publish() -> None:
    table = RoutingTable()
    v0 = table.version
    tasks = [asyncio.create_task(table.wait_newer(v0, LONG_S)) for _ in range(3)]
    await settle()
    table.publish({"echo": fn("v1")})
    results = await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert [table_of(r)["version"] for r in results] == [v0 + 1] * 3


async def test_waiter_far_behind_a_later_version_keeps_waiting_until_it_passes() -> None:
    table = RoutingTable()
    v0 = table.version
    task = asyncio.create_task(table.wait_newer(v0 + 1, LONG_S))
    await settle()
    table.publish({"a": fn("1")})  # v0 + 1: not newer than what it has
    await settle()
    assert not task.done()
    table.publish({"a": fn("2")})  # v0 + 2
    encoded = await asyncio.wait_for(task, 1.0)
    assert table_of(encoded)["version"] == v0 + 2


async def test_wait_newer_returns_the_current_table_at_the_timeout() -> None:
    table = RoutingTable()
    table.publish({"echo": fn("v1")})
    loop = asyncio.get_running_loop()
    started = loop.time()
    encoded = await table.wait_newer(table.version, SHORT_S)
    elapsed = loop.time() - started
    assert SHORT_S * 0.8 <= elapsed < 1.0
    assert encoded == table.encoded
    assert table_of(encoded)["functions"] == {"echo": fn("v1")}


async def test_close_releases_waiters() -> None:
    table = RoutingTable()
    tasks = [asyncio.create_task(table.wait_newer(table.version, LONG_S)) for _ in range(2)]
    await settle()
    assert not any(t.done() for t in tasks)
    table.close()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert results == [table.encoded, table.encoded]


async def test_after_close_waits_return_at_once() -> None:
    table = RoutingTable()
    table.close()
    encoded = await asyncio.wait_for(table.wait_newer(table.version, LONG_S), 1.0)
    assert encoded == table.encoded
