"""The call store on a real SQLite file: claims, deferrals, recovery, dedup, purge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.call import Outcome, Request
from gateway.calls import CallStore

T0 = 1_000_000.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CallStore]:
    s = CallStore(tmp_path / "gateway" / "calls.db")
    try:
        yield s
    finally:
        await s.close()


def req(body: bytes = b"x", **kw: object) -> Request:
    return Request(function="fn", body=body, headers=[["X-A", "1"]], **kw)  # type: ignore[arg-type]


async def test_add_then_claim_hands_each_call_out_once(store: CallStore) -> None:
    for i in range(5):
        await store.add(f"c{i}", req(str(i).encode()), T0 + i, 0)
    first, due = await store.claim(3, T0 + 10)
    second, due2 = await store.claim(3, T0 + 10)
    third, due3 = await store.claim(3, T0 + 10)
    assert [c.id for c in first] == ["c0", "c1", "c2"] and due == T0 + 3
    assert [c.id for c in second] == ["c3", "c4"] and due2 is None
    assert third == [] and due3 is None
    call = first[0]
    assert (call.state, call.attempts, call.body, call.headers) == ("running", 1, b"0", [["X-A", "1"]])


async def test_claim_respects_next_at(store: CallStore) -> None:
    await store.add("c0", req(), T0, 0)
    assert (await store.claim(5, T0 - 1)) == ([], T0)


async def test_defer_undoes_the_attempt_and_delays(store: CallStore) -> None:
    await store.add("c0", req(), T0, 0)
    await store.claim(1, T0)
    await store.defer("c0", T0 + 5, "unavailable: busy", T0)
    assert (await store.claim(1, T0 + 1)) == ([], T0 + 5)
    [again], _ = await store.claim(1, T0 + 5)
    assert (again.attempts, again.deferrals, again.error) == (1, 1, "unavailable: busy")


async def test_finish_records_the_result_and_owes_a_callback(store: CallStore) -> None:
    await store.add("c0", req(callback_url="http://127.0.0.1:1/cb"), T0, 0)
    await store.add("c1", req(), T0, 0)
    await store.claim(2, T0)
    await store.finish("c0", Outcome(200, [["Content-Type", "text/plain"]], b"hi"), T0 + 1)
    await store.finish("c1", Outcome(500, [], b"boom", "exception"), T0 + 1)
    c0, c1 = await store.get("c0"), await store.get("c1")
    assert c0 is not None and c1 is not None
    assert (c0.state, c0.status, c0.result_body, c0.callback_state) == ("succeeded", 200, b"hi", "pending")
    assert c0.describe()["result"] == {
        "status": 200, "headers": [["Content-Type", "text/plain"]], "body": "hi", "body_encoding": "utf-8"
    }
    assert (c1.state, c1.callback_state) == ("failed", None)
    [owed], due = await store.claim_callbacks(5, T0 + 1)
    assert owed.id == "c0" and owed.callback_state == "sending" and due is None


async def test_callback_retries_then_dead_letter(store: CallStore) -> None:
    await store.add("c0", req(callback_url="http://127.0.0.1:1/cb"), T0, 0)
    await store.claim(1, T0)
    await store.finish("c0", Outcome(200, [], b"ok"), T0)
    await store.claim_callbacks(1, T0)
    await store.callback_retry("c0", 1, T0 + 2, "receiver answered 500", T0)
    assert (await store.claim_callbacks(1, T0 + 1)) == ([], T0 + 2)
    await store.claim_callbacks(1, T0 + 2)
    await store.callback_dead("c0", 2, "receiver answered 500", T0 + 2)
    dead = await store.list("failed", None, 10)
    assert [c.id for c in dead] == ["c0"]
    assert dead[0].error == "callback not delivered: receiver answered 500"
    assert dead[0].summary()["callback"]["attempts"] == 2


async def test_recover_requeues_once_then_gives_up(store: CallStore) -> None:
    await store.add("c0", req(callback_url="http://127.0.0.1:1/cb"), T0, 0)
    await store.claim(1, T0)  # attempt 1 "dies" with the gateway
    assert await store.recover(T0 + 1, max_runs=2) == {"requeued": 1, "failed": 0, "callbacks": 0}
    [again], _ = await store.claim(1, T0 + 1)
    assert again.attempts == 2  # dies again
    assert await store.recover(T0 + 2, max_runs=2) == {"requeued": 0, "failed": 1, "callbacks": 0}
    lost = await store.get("c0")
    assert lost is not None and (lost.state, lost.status, lost.callback_state) == ("failed", 500, "pending")


async def test_recover_resumes_callbacks_being_sent(store: CallStore) -> None:
    await store.add("c0", req(callback_url="http://127.0.0.1:1/cb"), T0, 0)
    await store.claim(1, T0)
    await store.finish("c0", Outcome(200, [], b"ok"), T0)
    await store.claim_callbacks(1, T0)
    assert (await store.recover(T0 + 1, 2))["callbacks"] == 1
    assert [c.id for c in (await store.claim_callbacks(1, T0 + 1))[0]] == ["c0"]


async def test_dedup_key_within_and_after_the_window(store: CallStore) -> None:
    assert await store.add("c0", req(dedup_key="fn:d1"), T0, T0 - 60) == ("c0", True)
    assert await store.add("c1", req(dedup_key="fn:d1"), T0 + 10, T0 + 10 - 60) == ("c0", False)
    assert await store.add("c2", req(dedup_key="fn:d1"), T0 + 100, T0 + 100 - 60) == ("c2", True)
    assert await store.get("c1") is None


async def test_store_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    first = CallStore(path)
    await first.add("c0", req(b"\x00\xff"), T0, 0)
    await first.close()
    again = CallStore(path)
    try:
        call = await again.get("c0")
        assert call is not None and call.body == b"\x00\xff"
    finally:
        await again.close()


async def test_purge_keeps_what_is_young_or_still_owes_a_callback(store: CallStore) -> None:
    for cid, url in (("old", None), ("owed", "http://127.0.0.1:1/cb"), ("young", None), ("dead", None)):
        await store.add(cid, req(callback_url=url), T0, 0)
    await store.claim(4, T0)
    for cid in ("old", "owed", "dead"):
        status = 500 if cid == "dead" else 200
        await store.finish(cid, Outcome(status, [], b""), T0)
    await store.finish("young", Outcome(200, [], b""), T0 + 90)
    assert await store.purge(T0 + 100, retention_s=50, failed_retention_s=500) == 1
    assert {c.id for c in await store.list(None, None, 10)} == {"owed", "young", "dead"}
    assert await store.counts() == {"succeeded": 2, "failed": 1}


async def test_list_filters_and_orders_newest_first(store: CallStore) -> None:
    await store.add("a", req(), T0, 0)
    await store.add("b", Request(function="other"), T0, 0)
    await store.add("c", req(), T0, 0)
    assert [c.id for c in await store.list(None, None, 10)] == ["c", "b", "a"]
    assert [c.id for c in await store.list("queued", "fn", 1)] == ["c"]
    assert await store.list("failed", None, 10) == []


async def test_counts_of_one_function(store: CallStore) -> None:
    await store.add("a", req(), T0, 0)
    await store.add("b", Request(function="other"), T0, 0)
    await store.add("c", req(), T0, 0)
    await store.claim(1, T0)
    assert await store.counts() == {"running": 1, "queued": 2}
    assert await store.counts("fn") == {"running": 1, "queued": 1}
    assert await store.counts("other") == {"queued": 1}
    assert await store.counts("nobody") == {}
