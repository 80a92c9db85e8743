"""GET /system/calls against a real call store: filters apply to the list and to the counts alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.app import GATEWAY_KEY
from gateway.call import Request
from gateway.calls import CallStore
from gateway.calls_api import CALLS_KEY, list_calls

TOKEN = "admin-token-123"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[web.Application]:
    store = CallStore(tmp_path / "calls.db")
    app = web.Application()
    # Stand-ins with just what the route reads: the admin token and the store.
    app[GATEWAY_KEY] = SimpleNamespace(config=SimpleNamespace(admin_token=TOKEN))  # type: ignore[misc]
    app[CALLS_KEY] = SimpleNamespace(store=store)  # type: ignore[misc]
    try:
        yield app
    finally:
        await store.close()


async def get(app: web.Application, query: str) -> Any:
    request = make_mocked_request(
        "GET", f"/system/calls?{query}", headers={"Authorization": f"Bearer {TOKEN}"}, app=app
    )
    response = await list_calls(request)
    assert isinstance(response.body, bytes)
    return orjson.loads(response.body)


async def test_function_filter_applies_to_the_counts(app: web.Application) -> None:
    store = app[CALLS_KEY].store
    for call_id, function in (("a", "fn"), ("b", "other"), ("c", "other"), ("d", "fn")):
        await store.add(call_id, Request(function=function), 1.0, 0)
    await store.claim(1, 1.0)  # "a", of fn
    answer = await get(app, "function=other")
    assert [c["id"] for c in answer["calls"]] == ["c", "b"]
    assert answer["counts"] == {"queued": 2, "running": 0, "succeeded": 0, "failed": 0}
    everything = await get(app, "")
    assert everything["counts"] == {"queued": 3, "running": 1, "succeeded": 0, "failed": 0}
