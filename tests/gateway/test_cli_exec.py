"""`hearth exec` against a fake gateway that records what it was sent."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.cli import main


class FakeExecute:
    """POST /execute answering ``self.answer`` (or a 400 for code 'bad')."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.answer: dict[str, Any] = {
            "status": "ok", "stdout": "out\n", "stderr": "err\n", "exit_code": 0, "signal": None,
            "timed_out": False, "truncated": False, "duration_ms": 1.5,
        }

    async def handle(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.sent.append(payload)
        if payload["code"] == "bad":
            error = {"code": "bad_request", "message": "unknown language 'x'"}
            return web.json_response({"error": error}, status=400)
        return web.json_response(self.answer)


@pytest.fixture
async def fake(aiohttp_server: Any) -> tuple[FakeExecute, dict[str, str]]:
    gateway = FakeExecute()
    app = web.Application()
    app.router.add_post("/execute", gateway.handle)
    server = await aiohttp_server(app)
    return gateway, {"HEARTH_GATEWAY_URL": str(server.make_url("")).rstrip("/")}


async def hearth(argv: list[str], env: dict[str, str]) -> int:
    return await asyncio.to_thread(main, argv, env)


@pytest.fixture
def program(tmp_path: Path) -> Path:
    path = tmp_path / "prog.py"
    path.write_text("print('hi')\n")
    return path


async def test_sends_the_program_and_prints_its_output(
    fake: tuple[FakeExecute, dict[str, str]], program: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gateway, env = fake
    (tmp_path / "data.txt").write_text("text")
    (tmp_path / "blob").write_bytes(b"\xff\x00")
    argv = ["exec", "--stdin", "in", "--timeout", "2.5", "--memory", "64", "-f", str(tmp_path / "data.txt"),
            "-f", f"sub/b.bin={tmp_path / 'blob'}", str(program), "-x", "--stdin", "y"]
    assert await hearth(argv, env) == 0
    assert gateway.sent == [{
        "language": "python", "code": "print('hi')\n", "stdin": "in", "args": ["-x", "--stdin", "y"],
        "timeout_s": 2.5, "memory_mb": 64,
        "files": [
            {"name": "data.txt", "content": "text"},
            {"name": "sub/b.bin", "content": base64.b64encode(b"\xff\x00").decode(), "encoding": "base64"},
        ],
    }]
    out, err = capsys.readouterr()
    assert (out, err) == ("out\n", "err\n")


async def test_only_what_was_given_is_sent(fake: tuple[FakeExecute, dict[str, str]], program: Path) -> None:
    gateway, env = fake
    assert await hearth(["exec", str(program)], env) == 0
    assert gateway.sent == [{"language": "python", "code": "print('hi')\n"}]


@pytest.mark.parametrize(("answer", "exit_code", "note"), [
    ({"status": "error", "exit_code": 3}, 3, None),
    ({"status": "timeout", "exit_code": None, "signal": "SIGKILL", "timed_out": True}, 124, "timeout"),
    ({"status": "memory", "exit_code": 1}, 1, "out of memory"),
    ({"status": "output_limit", "exit_code": None, "signal": "SIGKILL", "truncated": True}, 137,
     "output limit"),
])
async def test_the_programs_end_becomes_the_exit_code(
    fake: tuple[FakeExecute, dict[str, str]], program: Path, capsys: pytest.CaptureFixture[str],
    answer: dict[str, Any], exit_code: int, note: str | None,
) -> None:
    gateway, env = fake
    gateway.answer.update(answer)
    assert await hearth(["exec", str(program)], env) == exit_code
    err = capsys.readouterr().err
    assert (note in err) if note else err == "err\n"


async def test_json_prints_the_answer_as_is(
    fake: tuple[FakeExecute, dict[str, str]], program: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, env = fake
    assert await hearth(["exec", "--json", str(program)], env) == 0
    assert json.loads(capsys.readouterr().out) == gateway.answer


async def test_program_and_stdin_from_files_or_our_stdin(
    fake: tuple[FakeExecute, dict[str, str]], program: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, env = fake
    (tmp_path / "input.txt").write_text("from a file")
    assert await hearth(["exec", "--stdin", f"@{tmp_path / 'input.txt'}", str(program)], env) == 0
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"print(2)\n")))
    assert await hearth(["exec", "-"], env) == 0
    assert [s.get("stdin") for s in gateway.sent] == ["from a file", None]
    assert gateway.sent[1]["code"] == "print(2)\n"


async def test_refusals_and_mistakes(
    fake: tuple[FakeExecute, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, env = fake
    bad = tmp_path / "bad.py"
    bad.write_text("bad")
    assert await hearth(["exec", str(bad)], env) == 1
    assert "400 bad_request: unknown language 'x'" in capsys.readouterr().err
    assert await hearth(["exec", str(tmp_path / "missing.py")], env) == 2
    assert "cannot read" in capsys.readouterr().err
    assert await hearth(["exec", "--stdin", "-", "-"], env) == 2
    assert "cannot both come from stdin" in capsys.readouterr().err
    assert len(gateway.sent) == 1
