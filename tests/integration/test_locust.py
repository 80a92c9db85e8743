"""loadtest/run_locust.py for a few seconds against a real Hearth: every user class sends, nothing fails."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.stack import REPO, Stack

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

# Request names in Locust's CSV, by the user class that sends them.
EXPECTED = {
    "SyncUser": [("POST", "/function/[name]")],
    "AsyncUser": [
        ("POST", "/async-function/[name]"), ("GET", "/system/calls/[id]"), ("ASYNC", "call completed"),
    ],
    "HookUser": [("POST", "/hooks/[name]")],
    "ExecuteUser": [("POST", "/execute")],
}


@pytest.fixture(scope="module")
def hearth(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("locust"), HEARTH_SANDBOX_MIN_SCALE="1")
    try:
        yield stack.up()
    finally:
        stack.down()


def test_a_short_headless_run_writes_reports_without_failures(hearth: Stack, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    cmd = [
        sys.executable, "-m", "loadtest.run_locust", "--gateway", hearth.url,
        "--users", "4", "--spawn-rate", "4", "--run-time", "5s", "--out", str(out),
    ]
    # Its own process: locust brings gevent, which must not meet aiohttp.
    # The token goes by environment, as an operator would pass it.
    env = {**os.environ, "HEARTH_ADMIN_TOKEN": hearth.token}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    with (out / "hearth_stats.csv").open(newline="") as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    for user_class, names in EXPECTED.items():
        for key in names:
            assert key in rows and int(rows[key]["Request Count"]) > 0, (user_class, key, sorted(rows))
    total = rows[("", "Aggregated")]
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0, total
    assert (out / "hearth.html").stat().st_size > 0
    # The runner removes what it deployed.
    assert hearth.request("GET", "/system/functions/loadtest-echo", admin=True)[0] == 404
