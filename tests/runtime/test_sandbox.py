"""The sandbox's parts that are safe outside a container: decisions, cleanup of a tree, the zygote.

The sweep and the wipe of /tmp run only as a container's PID 1 (the
executor refuses anywhere else, as the last test checks); their effect is
tested against real Docker in tests/integration/test_execute.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from runtime import cleanup, confine, pipes
from runtime.runs import Limits, RunRequest, check_file_name, classify, limits_from_meta, parse_request
from runtime.sandbox import RUN_ENV, Zygote
from tests.runtime.conftest import Server

pytestmark = pytest.mark.timeout(60)


def status_of(code: int = 0, signum: int | None = None) -> int:
    return signum if signum is not None else code << 8  # as waitpid reports them


@pytest.mark.parametrize(("args", "expected"), [
    ((status_of(0), False, False, False, b""), ("ok", 0, None)),
    ((status_of(3), False, False, False, b""), ("error", 3, None)),
    ((status_of(signum=signal.SIGKILL), True, False, False, b""), ("timeout", None, "SIGKILL")),
    ((status_of(signum=signal.SIGXCPU), False, False, False, b""), ("timeout", None, "SIGXCPU")),
    ((status_of(signum=signal.SIGKILL), False, True, False, b""), ("output_limit", None, "SIGKILL")),
    ((status_of(signum=signal.SIGKILL), False, False, True, b""), ("memory", None, "SIGKILL")),
    ((status_of(signum=signal.SIGKILL), False, False, None, b""), ("memory", None, "SIGKILL")),
    ((status_of(signum=signal.SIGKILL), False, False, False, b""), ("error", None, "SIGKILL")),
    ((status_of(1), False, False, False, b"Traceback...\nMemoryError\n"), ("memory", 1, None)),
    ((status_of(1), False, False, False, b"MemoryError\nthen more\n"), ("error", 1, None)),
    ((status_of(signum=signal.SIGSEGV), False, False, False, b""), ("error", None, "SIGSEGV")),
    ((None, True, False, None, b""), ("timeout", None, None)),
    ((None, False, False, None, b""), ("error", None, None)),
])
def test_classify(args: tuple[Any, ...], expected: tuple[str, int | None, str | None]) -> None:
    assert classify(*args) == expected


def test_requests_are_clamped_to_the_loaded_maxima() -> None:
    limits = limits_from_meta({"max_timeout_s": 2, "max_memory_mb": 64, "max_output_bytes": 10})
    body = {"code": "x", "timeout_s": 99, "memory_mb": 999, "output_limit_bytes": 10**9,
            "files": [{"name": "a/b", "content": "AAE=", "encoding": "base64"}]}
    run = parse_request(json.dumps(body).encode(), limits)
    assert (run.timeout_s, run.memory_mb, run.output_limit_bytes) == (2.0, 64, 10)
    assert run.files == [("a/b", b"\x00\x01")]
    assert parse_request(b'{"code": ""}', Limits()).timeout_s == 10.0


@pytest.mark.parametrize("body", [
    b"nope", b"[]", b'{"code": 1}', b'{"code": "", "stdin": 1}', b'{"code": "", "args": [1]}',
    b'{"code": "", "files": [{"name": "../x"}]}', b'{"code": "", "timeout_s": -1}',
    b'{"code": "", "files": [{"name": "a", "content": "!", "encoding": "base64"}]}',
])
def test_bad_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_request(body, Limits())


@pytest.mark.parametrize("name", ["/x", "../x", "a/../b", "a//b", "./a", "main.py", "a b", ""])
def test_unsafe_file_names(name: str) -> None:
    with pytest.raises(ValueError):
        check_file_name(name)


def test_limits_must_be_positive_numbers() -> None:
    with pytest.raises(ValueError, match="max_runs"):
        limits_from_meta({"max_runs": 0})
    with pytest.raises(ValueError, match="max_timeout_s"):
        limits_from_meta({"max_timeout_s": "1"})


def test_empty_dir_removes_links_not_their_targets(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    (precious / "inner").mkdir(parents=True)
    (precious / "inner" / "file").write_text("keep")
    scratch = tmp_path / "scratch"
    (scratch / "locked" / "deeper").mkdir(parents=True)
    (scratch / "locked" / "deeper" / "f").write_text("x")
    for name, target in (("to_dir", precious), ("to_file", precious / "inner" / "file"),
                         ("up", tmp_path), ("dangling", tmp_path / "nowhere")):
        (scratch / name).symlink_to(target)
    os.mkfifo(scratch / "fifo")
    os.chmod(scratch / "locked" / "deeper", 0)
    os.chmod(scratch / "locked", 0)
    (scratch / "kept").write_text("k")
    cleanup.empty_dir(str(scratch), keep=frozenset({"kept"}))
    assert os.listdir(scratch) == ["kept"]
    assert (precious / "inner" / "file").read_text() == "keep"
    cleanup.remove_tree(str(scratch))
    assert not scratch.exists() and precious.exists()


async def test_capture_stops_at_its_limit_and_feed_survives_a_reader_that_left() -> None:
    read_fd, write_fd = os.pipe()
    overflowed: list[bool] = []
    capture = pipes.Capture(read_fd, 10, lambda: overflowed.append(True))
    pipes.Feed(write_fd, b"x" * 100_000)  # more than a pipe holds: written as it drains
    assert await capture.finish(5.0) == b"x" * 10
    assert capture.truncated and overflowed == [True]
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    pipes.Feed(write_fd, b"nobody reads this")  # EPIPE is swallowed, the fd closed


@pytest.fixture
async def zygote() -> AsyncIterator[Zygote]:
    z = Zygote()
    try:
        yield z
    finally:
        z.stop()


def prepare(scratch: Path, code: str) -> None:
    scratch.mkdir(exist_ok=True)
    (scratch / "main.py").write_text(code)


async def run(z: Zygote, scratch: Path, code: str, **fields: Any) -> tuple[dict[str, Any], bytes, bytes]:
    """One run through the zygote, without the executor's sweep and wipe."""
    prepare(scratch, code)
    request = RunRequest(
        code=code.encode(), stdin=fields.pop("stdin", b""), args=fields.pop("args", []), files=[],
        timeout_s=5.0, memory_mb=fields.pop("memory_mb", 64), output_limit_bytes=1 << 16,
    )
    stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    spec_r, spec_w = os.pipe2(os.O_CLOEXEC)
    await z.fork([stdin_r, out_w, err_w, spec_r])
    for fd in (stdin_r, out_w, err_w, spec_r):
        os.close(fd)
    pipes.Feed(spec_w, request.spec(str(scratch), RUN_ENV))
    pipes.Feed(stdin_w, request.stdin)
    out, err = pipes.Capture(out_r, 1 << 16, lambda: None), pipes.Capture(err_r, 1 << 16, lambda: None)
    answer = await asyncio.wait_for(z.receive(), 10)
    return answer, await out.finish(2), await err.finish(2)


async def test_the_zygote_runs_a_program_like_python_would(zygote: Zygote, tmp_path: Path) -> None:
    code = "import os, sys\nprint(sys.argv, sys.stdin.read(), os.getcwd() == sys.path[0], sorted(os.environ))"
    answer, out, err = await run(zygote, tmp_path / "s1", code, stdin=b"in", args=["a"])
    assert (os.waitstatus_to_exitcode(answer["status"]), err) == (0, b"")
    assert out == b"['main.py', 'a'] in True ['HOME', 'LANG', 'PATH', 'TMPDIR']\n"
    answer, out, err = await run(zygote, tmp_path / "s2", "import sys\nprint('x')\nsys.exit('bye')\n")
    assert (os.waitstatus_to_exitcode(answer["status"]), out, err) == (1, b"x\n", b"bye\n")


async def test_a_run_is_confined(zygote: Zygote, tmp_path: Path) -> None:
    code = f"""
import resource
print(resource.getrlimit(resource.RLIMIT_CORE)[0], open('/proc/self/oom_score_adj').read().strip())
try:
    open({str(tmp_path / 'outside')!r}, 'w')
    print('wrote outside')
except PermissionError:
    print('denied')
open('inside', 'w').write('ok')
x = bytearray(200 << 20)
"""
    answer, out, err = await run(zygote, tmp_path / "s", code, memory_mb=64)
    lines = out.decode().splitlines()
    assert lines[0] == "0 1000"
    if confine.landlock_abi():
        assert lines[1] == "denied" and not (tmp_path / "outside").exists()
    assert (tmp_path / "s" / "inside").read_text() == "ok"
    assert err.endswith(b"MemoryError\n") and os.waitstatus_to_exitcode(answer["status"]) == 1


def test_sandbox_mode_is_refused_outside_a_container(server: Server) -> None:
    client = server.client()
    reply, _ = client.call({"op": "execute"}, b'{"code": ""}')
    assert (reply["outcome"], reply["error"]["code"]) == ("refused", "not_sandbox")
    reply = client.load({}, mode="sandbox")
    assert reply["ok"] is False and "PID namespace" in reply["error"]["message"]
    assert client.health()["function"] is None
