"""The access log: the JSON shape of every other line, written once per event-loop turn."""

from __future__ import annotations

import asyncio
import io
import logging

import orjson
import pytest

from hearth import logs


class CountingStream(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes += 1
        return super().write(data)


async def test_lines_of_one_loop_turn_go_out_in_one_write() -> None:
    stream = CountingStream()
    access = logs.AccessLog("gateway", "hearth.gateway", stream)
    token = logs.request_id.set("rid-1")
    try:
        for status in (200, 404, 502):
            access.write("invoke", {"function": "f", "status": status})
    finally:
        logs.request_id.reset(token)
    assert stream.writes == 0  # nothing yet: the turn is not over
    await asyncio.sleep(0)
    assert stream.writes == 1
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["status"] for line in lines] == [200, 404, 502]
    assert set(lines[0]) == {"ts", "level", "process", "logger", "msg", "request_id", "function", "status"}
    assert (lines[0]["level"], lines[0]["process"], lines[0]["logger"], lines[0]["msg"],
            lines[0]["request_id"]) == ("info", "gateway", "hearth.gateway", "invoke", "rid-1")
    access.write("invoke", {"status": 200})
    access.flush()  # as at shutdown: pending lines are not lost
    assert stream.writes == 2


@pytest.mark.parametrize(("level", "enabled"), [("INFO", True), ("WARNING", False)])
def test_the_access_log_follows_the_log_level(level: str, enabled: bool) -> None:
    logger = logging.getLogger("hearth.test-access")
    old = logger.level
    logger.setLevel(level)
    try:
        assert logs.AccessLog("gateway", "hearth.test-access").enabled() is enabled
        # HEARTH_ACCESS_LOG=false turns it off whatever the level
        assert logs.AccessLog("gateway", "hearth.test-access", on=False).enabled() is False
    finally:
        logger.setLevel(old)
