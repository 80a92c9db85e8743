"""The routing table's watch loop: how loudly a missing pool manager is reported."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config
from gateway.control import ControlUnavailable
from gateway.routes import STARTUP_GRACE_S, Routes, unavailable_level

TABLE = {"version": 1, "functions": {}}


class ScriptedControl:
    """Answers each routes() call from a script of (time, table or exception), then hangs."""

    def __init__(self, script: list[tuple[float, Any]]) -> None:
        self.script = script
        self.now = 0.0
        self.done = asyncio.Event()

    def clock(self) -> float:
        return self.now

    async def routes(self, after: int, timeout_s: float) -> dict[str, Any]:
        if not self.script:
            self.done.set()
            await asyncio.Event().wait()
        self.now, outcome = self.script.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return dict(outcome)


def test_unavailable_is_a_warning_only_once_a_table_was_loaded_or_the_grace_ran_out() -> None:
    assert unavailable_level(loaded=False, waited_s=0.0) == logging.INFO
    assert unavailable_level(loaded=False, waited_s=STARTUP_GRACE_S - 0.1) == logging.INFO
    assert unavailable_level(loaded=False, waited_s=STARTUP_GRACE_S) == logging.WARNING
    assert unavailable_level(loaded=True, waited_s=0.0) == logging.WARNING


async def test_a_pool_manager_still_starting_is_waited_for_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config.from_env({"HEARTH_ADMIN_TOKEN": "admin-token-123", "HEARTH_DATA_DIR": str(tmp_path)})
    refused = ControlUnavailable("connection refused")
    late = STARTUP_GRACE_S + 1
    control = ScriptedControl([(0.0, refused), (late, refused), (late + 1, TABLE), (late + 2, refused)])
    routes = Routes(config, control, clock=control.clock)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="hearth.gateway.routes")
    watcher = asyncio.create_task(routes.watch())
    try:
        await asyncio.wait_for(control.done.wait(), 5)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "waiting for the pool manager's routing table (0 s so far): connection refused"),
        (logging.WARNING, "waiting for the pool manager's routing table (11 s so far): connection refused"),
        (logging.WARNING, "routing table unavailable (serving the last one): connection refused"),
    ]
    assert routes.ready.is_set() and routes.version == 1
