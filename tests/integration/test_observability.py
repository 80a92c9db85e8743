"""Metrics, JSON logs with request ids, and `hearth logs`, against the real processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

from tests.integration.stack import REPO, Stack

pytestmark = pytest.mark.docker

CHATTY = (
    "def handle(event, context):\n"
    "    print('handling', event.query.get('n'))\n"
    "    return 'ok'\n"
)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        return resp.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample, or 0 when absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_starts_and_containers(stack: Stack) -> None:
    stack.deploy("metered", CHATTY)
    codes = [stack.request("GET", "/function/metered?n=1")[0] for _ in range(5)]
    assert codes == [200] * 5
    assert stack.request("GET", "/function/no-such-function")[0] == 404
    gateway = scrape(f"{stack.url}/metrics")
    assert sample(gateway, "hearth_requests_total", function="metered", status="200") == 5
    assert sample(gateway, "hearth_requests_total", function="_unknown", status="404") >= 1
    assert sample(gateway, "hearth_starts_total", function="metered", start="prewarmed") == 1
    assert sample(gateway, "hearth_starts_total", function="metered", start="warm") == 4
    assert sample(gateway, "hearth_request_duration_seconds_count", function="metered") == 5
    pool = scrape(f"http://127.0.0.1:{stack.control_port}/metrics")
    assert sample(pool, "hearth_containers", function="metered", state="ready") == 1
    assert sample(pool, "hearth_specializations_total", function="metered") >= 1
    assert sample(pool, "hearth_container_budget") > 0


def logged(stack: Stack, request_id: str, msg: str) -> list[dict[str, Any]]:
    """The gateway's lines for ``request_id``, once its ``msg`` line is there (written
    at the end of the loop turn that answered, so just after the answer)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(line) for line in stack.log("gateway").splitlines() if line.startswith("{")]
        mine = [e for e in lines if e.get("request_id") == request_id]
        if any(e.get("msg") == msg for e in mine) or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


def test_a_request_id_follows_the_call_into_logs(stack: Stack) -> None:
    stack.deploy("traced", CHATTY)
    req = urllib.request.Request(
        f"{stack.url}/function/traced?n=42", headers={"X-Request-Id": "trace-me-123"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["X-Request-Id"] == "trace-me-123"
    mine = logged(stack, "trace-me-123", "invoke")
    assert mine and mine[-1]["msg"] == "invoke" and mine[-1]["status"] == 200
    assert mine[-1]["function"] == "traced"
    env = {**stack.env, "HEARTH_GATEWAY_URL": stack.url, "HEARTH_ADMIN_TOKEN": stack.token}
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "logs", "traced"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if "handling 42" in line]
    printed = [json.loads(line.split("  ", 1)[1]) for line in lines]
    assert printed, out.stdout
    # The function's own line carries the gateway's request id: one call, followed end to end.
    assert printed[0]["request_id"] == "trace-me-123"
    assert printed[0]["function"] == "traced" and printed[0]["stream"] == "stdout"


def test_execute_outcomes_are_counted(engine: None, tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Stack(tmp_path, HEARTH_SANDBOX_MIN_SCALE="1")
    try:
        s.up()
        for code in ("print('hi')", "raise SystemExit(3)"):
            status, _, _ = s.request("POST", "/execute", {"language": "python", "code": code})
            assert status == 200
        text = scrape(f"{s.url}/metrics")
        assert sample(text, "hearth_executions_total", status="ok") == 1
        assert sample(text, "hearth_executions_total", status="error") == 1
        # A run is logged under its request id, like an invocation.
        req = urllib.request.Request(
            f"{s.url}/execute", data=json.dumps({"code": "print(1)"}).encode(),
            headers={"X-Request-Id": "exec-me-7", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.headers["X-Request-Id"] == "exec-me-7"
        mine = logged(s, "exec-me-7", "execute")
        assert mine and mine[-1]["msg"] == "execute" and mine[-1]["status"] == "ok", mine
    finally:
        s.down()
