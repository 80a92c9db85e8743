"""`hearth invoke --async` and `hearth calls`: argument checks and the table (no gateway needed)."""

from __future__ import annotations

import pytest

from gateway.cli import main
from gateway.cli_calls import format_calls

GATEWAY = ["--gateway", "http://127.0.0.1:9"]  # never reached: the checks fail first


@pytest.mark.parametrize(("argv", "message"), [
    (["invoke", "fn", "--callback", "http://127.0.0.1/cb"], "--callback needs --async"),
    (["invoke", "fn", "--async", "-X", "GET"], "always POST"),
])
def test_bad_async_invocations_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(GATEWAY + argv, {}) == 2
    assert message in capsys.readouterr().err


def test_calls_table_shows_state_callback_and_error() -> None:
    table = format_calls([
        {"id": "a" * 32, "function": "fn", "state": "failed", "status": 200, "attempts": 1,
         "callback": {"state": "failed", "attempts": 8}, "created_at": 0,
         "error": "callback not delivered: receiver answered 500"},
        {"id": "b" * 32, "function": "fn", "state": "queued", "status": None, "attempts": 0,
         "callback": None, "created_at": None, "error": None},
        "junk",
    ])
    lines = table.splitlines()
    titles = ["ID", "FUNCTION", "STATE", "STATUS", "ATTEMPTS", "CALLBACK", "CREATED", "ERROR"]
    assert lines[0].split() == titles
    assert "failed (8)" in lines[1] and "receiver answered 500" in lines[1]
    assert lines[2].split()[:6] == ["b" * 32, "fn", "queued", "-", "0", "-"]
    assert len(lines) == 4
