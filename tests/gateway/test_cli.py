"""The `hearth` CLI against a small fake gateway that records what it was sent."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway import cli_up
from gateway.cli import default_data_dir, format_table, main
from gateway.cli_config import gateway_url, load_or_create_token, resolve_token

TOKEN = "secret-token-123"


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class FakeGateway:
    """Answers like the public API; special function names provoke special answers."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.functions: dict[str, dict[str, Any]] = {}
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_put("/system/functions/{name}", self.put_function)
        app.router.add_get("/system/functions", self.list_functions)
        app.router.add_delete("/system/functions/{name}", self.delete_function)
        app.router.add_route("*", "/function/{name}{tail:.*}", self.invoke)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(request.method, request.path, request.query_string, dict(request.headers), body)
        )
        if request.path.startswith("/system/") and request.headers.get("Authorization") != (
            f"Bearer {TOKEN}"
        ):
            return _error(401, "unauthorized", "missing or wrong admin token")
        response: web.StreamResponse = await handler(request)
        return response

    async def put_function(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.functions[name] = {"name": name, **await request.json()}
        return web.json_response({"name": name, "version": 3})

    async def list_functions(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "functions": [
                    {
                        "name": "hello",
                        "handler": "main.handle",
                        "concurrency": 4,
                        "min_scale": 0,
                        "max_scale": 10,
                        "containers": {"ready": 2, "starting": 0, "draining": 0},
                    },
                    {"name": "sparse"},
                ]
            }
        )

    async def delete_function(self, request: web.Request) -> web.Response:
        if request.match_info["name"] == "missing":
            return _error(404, "not_found", "no function named 'missing'")
        return web.Response(status=204)

    async def invoke(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "boom":
            return _error(500, "handler_error", "ZeroDivisionError: division by zero")
        if name == "teapot":
            return web.Response(status=418, text="short and stout")
        if name == "moved":
            return web.Response(status=302, headers={"Location": "/elsewhere"}, text="see there")
        return web.Response(body=b"\x00echo:" + await request.read(), headers={"X-Request-Id": "r-1"})


@pytest.fixture
def fake() -> Iterator[FakeGateway]:
    """A FakeGateway served from its own event loop in a thread; the CLI blocks."""
    gateway = FakeGateway()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(gateway.app())
    asyncio.run_coroutine_threadsafe(runner.setup(), loop).result(5)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    asyncio.run_coroutine_threadsafe(site.start(), loop).result(5)
    gateway.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield gateway
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture
def env(fake: FakeGateway, tmp_path: Path) -> dict[str, str]:
    return {
        "HEARTH_GATEWAY_URL": fake.url,
        "HEARTH_ADMIN_TOKEN": TOKEN,
        "HEARTH_DATA_DIR": str(tmp_path / "data"),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- settings ---------------------------------------------------------------


def test_default_data_dir_follows_xdg() -> None:
    assert default_data_dir({"XDG_DATA_HOME": "/x/share"}) == Path("/x/share/hearth")
    assert default_data_dir({}) == Path.home() / ".local" / "share" / "hearth"


def test_gateway_url_default_env_and_override() -> None:
    assert gateway_url({}) == "http://127.0.0.1:8080"
    assert gateway_url({"HEARTH_GATEWAY_PORT": "9090"}) == "http://127.0.0.1:9090"
    assert gateway_url({"HEARTH_GATEWAY_URL": "http://h:1/"}) == "http://h:1"
    assert gateway_url({"HEARTH_GATEWAY_URL": "http://h:1"}, "https://o:2") == "https://o:2"


def test_bad_gateway_port_names_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls"], {"HEARTH_GATEWAY_PORT": "eighty"}) == 2
    assert "HEARTH_GATEWAY_PORT" in capsys.readouterr().err


def test_token_resolution_order(tmp_path: Path) -> None:
    environ = {"HEARTH_DATA_DIR": str(tmp_path)}
    assert resolve_token(environ) is None
    (tmp_path / "admin-token").write_text("from-file\n")
    assert resolve_token(environ) == "from-file"
    assert resolve_token({**environ, "HEARTH_ADMIN_TOKEN": "from-env"}) == "from-env"
    assert resolve_token({**environ, "HEARTH_ADMIN_TOKEN": "from-env"}, "flag") == "flag"


def test_token_file_used_when_env_unset(fake: FakeGateway, tmp_path: Path) -> None:
    (tmp_path / "admin-token").write_text(TOKEN + "\n")
    assert main(["ls"], {"HEARTH_GATEWAY_URL": fake.url, "HEARTH_DATA_DIR": str(tmp_path)}) == 0
    assert fake.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_missing_token_fails_before_sending(
    fake: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {"HEARTH_GATEWAY_URL": fake.url, "HEARTH_DATA_DIR": str(tmp_path)}
    assert main(["rm", "hello"], environ) == 2
    assert "no admin token" in capsys.readouterr().err
    assert fake.requests == []


def test_token_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "admin-token"
    token = load_or_create_token(path)
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == token


# --- deploy -----------------------------------------------------------------


def test_deploy_source_sends_only_given_options(
    fake: FakeGateway, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "hello.py"
    source.write_text("def handle(event, context):\n    return 'hi'\n")
    assert main(["deploy", "hello", str(source)], env) == 0
    [req] = fake.requests
    assert (req.method, req.path) == ("PUT", "/system/functions/hello")
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert req.headers["Content-Type"] == "application/json"
    assert req.json() == {"source": "def handle(event, context):\n    return 'hi'\n"}
    assert capsys.readouterr().out == "deployed hello (version 3)\n"


def test_deploy_all_options(fake: FakeGateway, env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "f.py"
    source.write_text("x = 1\n")
    args = ["deploy", "fn", str(source), "--handler", "main.run", "--timeout", "2.5"]
    args += ["--memory", "256", "--concurrency", "8", "--min-scale", "1", "--max-scale", "5"]
    args += ["--env", "A=1", "--env", "B=x=y", "--network", "--webhook-secret", "s3"]
    assert main(args, env) == 0
    assert fake.requests[0].json() == {
        "source": "x = 1\n",
        "handler": "main.run",
        "timeout_s": 2.5,
        "memory_mb": 256,
        "concurrency": 8,
        "min_scale": 1,
        "max_scale": 5,
        "env": {"A": "1", "B": "x=y"},
        "network": True,
        "webhook_secret": "s3",
    }


def test_deploy_whole_seconds_and_no_network(fake: FakeGateway, env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "f.py").write_text("")
    assert main(["deploy", "fn", str(tmp_path / "f.py"), "--timeout", "30", "--no-network"], env) == 0
    body = fake.requests[0].json()
    assert body["timeout_s"] == 30 and isinstance(body["timeout_s"], int)
    assert body["network"] is False


def test_deploy_directory_zips_relative_paths_without_junk(
    fake: FakeGateway, env: dict[str, str], tmp_path: Path
) -> None:
    app = tmp_path / "app"
    (app / "pkg" / "__pycache__").mkdir(parents=True)
    (app / ".git").mkdir()
    (app / "main.py").write_text("from pkg import util\n")
    (app / "pkg" / "util.py").write_text("X = 1\n")
    (app / "pkg" / "__pycache__" / "util.cpython-311.pyc").write_bytes(b"junk")
    (app / ".git" / "HEAD").write_text("ref")
    (app / ".env").write_text("SECRET=1")
    assert main(["deploy", "app", str(app)], env) == 0
    body = fake.requests[0].json()
    assert set(body) == {"archive"}
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(body["archive"])))
    assert sorted(archive.namelist()) == ["main.py", "pkg/util.py"]
    assert archive.read("pkg/util.py") == b"X = 1\n"


def test_deploy_tarball_sends_its_bytes(fake: FakeGateway, env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("pass\n")
    tarball = tmp_path / "code.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tmp_path / "main.py", arcname="main.py")
    assert main(["deploy", "t", str(tarball)], env) == 0
    assert base64.b64decode(fake.requests[0].json()["archive"]) == tarball.read_bytes()


@pytest.mark.parametrize("name", ["nope.py", "notes.txt"])
def test_deploy_bad_path_fails_without_request(
    fake: FakeGateway, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    assert main(["deploy", "fn", str(tmp_path / name)], env) == 2
    assert str(tmp_path / name) in capsys.readouterr().err
    assert fake.requests == []


def test_deploy_single_file_with_another_module_fails_without_request(
    fake: FakeGateway, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cold.py").write_text("def handle(event, context):\n    return 1\n")
    assert main(["deploy", "cold", str(tmp_path / "cold.py"), "--handler", "cold.handle"], env) == 2
    err = capsys.readouterr().err
    assert "handler 'cold.handle': a single-file deploy is saved as main.py" in err
    assert "--handler main.<function>" in err
    assert fake.requests == []
    # A directory keeps its file names, so any module may hold the handler.
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "cold.py").write_text("def handle(event, context):\n    return 1\n")
    assert main(["deploy", "cold", str(tmp_path / "app"), "--handler", "cold.handle"], env) == 0


def test_deploy_rejects_env_without_equals(env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["deploy", "fn", str(tmp_path), "--env", "NOEQUALS"], env)
    assert exit_info.value.code == 2


def test_deploy_wrong_token_prints_server_error(
    fake: FakeGateway, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "f.py").write_text("")
    assert main(["deploy", "fn", str(tmp_path / "f.py"), "--token", "wrong"], env) == 1
    assert fake.requests[0].headers["Authorization"] == "Bearer wrong"
    err = capsys.readouterr().err
    assert "401 unauthorized: missing or wrong admin token" in err
    assert "Traceback" not in err


# --- invoke -----------------------------------------------------------------


def test_invoke_without_data_is_a_get_without_admin_token(
    fake: FakeGateway, env: dict[str, str], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["invoke", "hello"], env) == 0
    [req] = fake.requests
    assert (req.method, req.path, req.body) == ("GET", "/function/hello", b"")
    assert "Authorization" not in req.headers
    assert capsysbinary.readouterr().out == b"\x00echo:"


def test_invoke_with_data_posts_json(
    fake: FakeGateway, env: dict[str, str], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["invoke", "hello", "--data", '{"n": 1}'], env) == 0
    [req] = fake.requests
    assert (req.method, req.body) == ("POST", b'{"n": 1}')
    assert req.headers["Content-Type"] == "application/json"
    assert capsysbinary.readouterr().out == b'\x00echo:{"n": 1}'


def test_invoke_method_path_and_headers(fake: FakeGateway, env: dict[str, str]) -> None:
    args = ["invoke", "hello", "-X", "put", "--path", "items/7?full=1", "--data", "plain"]
    args += ["-H", "X-Trace: abc", "-H", "content-type: text/plain"]
    assert main(args, env) == 0
    [req] = fake.requests
    assert (req.method, req.path, req.query) == ("PUT", "/function/hello/items/7", "full=1")
    assert req.headers["X-Trace"] == "abc"
    assert req.headers["Content-Type"] == "text/plain"


def test_invoke_data_from_file_and_stdin(
    fake: FakeGateway, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"\xff\x00binary")
    assert main(["invoke", "hello", "--data", f"@{payload}"], env) == 0
    assert fake.requests[0].body == b"\xff\x00binary"
    assert fake.requests[0].headers["Content-Type"] == "application/octet-stream"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin")))
    assert main(["invoke", "hello", "--data", "-"], env) == 0
    assert (fake.requests[1].method, fake.requests[1].body) == ("POST", b"from stdin")


def test_invoke_include_prints_status_and_headers(
    fake: FakeGateway, env: dict[str, str], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["invoke", "hello", "-i"], env) == 0
    out = capsysbinary.readouterr().out
    head, _, body = out.partition(b"\n\n")
    assert head.startswith(b"HTTP/1.1 200 OK\n")
    assert b"X-Request-Id: r-1" in head.split(b"\n")
    assert body == b"\x00echo:"


def test_invoke_json_error_exits_1_with_code_on_stderr(
    fake: FakeGateway, env: dict[str, str], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["invoke", "boom"], env) == 1
    captured = capsysbinary.readouterr()
    assert json.loads(captured.out)["error"]["message"] == "ZeroDivisionError: division by zero"
    assert captured.err == b"hearth: 500 handler_error\n"  # the message is on stdout already


def test_invoke_ends_the_body_with_a_newline_only_on_a_terminal(
    fake: FakeGateway, env: dict[str, str], capsysbinary: pytest.CaptureFixture[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert main(["invoke", "boom"], env) == 1
    piped = capsysbinary.readouterr().out
    assert not piped.endswith(b"\n")  # byte-exact into a pipe
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["invoke", "boom"], env) == 1
    assert main(["invoke", "hello", "--data", "x\n"], env) == 0
    assert capsysbinary.readouterr().out == piped + b"\n" + b"\x00echo:x\n"


def test_invoke_plain_error_and_redirect(
    fake: FakeGateway, env: dict[str, str], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["invoke", "teapot"], env) == 1
    assert capsysbinary.readouterr() == (b"short and stout", b"")
    assert main(["invoke", "moved"], env) == 0  # shown, not followed
    assert capsysbinary.readouterr().out == b"see there"
    assert [r.path for r in fake.requests] == ["/function/teapot", "/function/moved"]


def test_invoke_rejects_malformed_header(
    fake: FakeGateway, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["invoke", "hello", "-H", "NoColon"], env) == 2
    assert "Key: Value" in capsys.readouterr().err
    assert fake.requests == []


# --- ls / rm ----------------------------------------------------------------


def test_ls_prints_a_table_with_dashes_for_missing(
    fake: FakeGateway, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ls"], env) == 0
    [req] = fake.requests
    assert (req.method, req.path) == ("GET", "/system/functions")
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NAME", "HANDLER", "CONCURRENCY", "MIN", "MAX", "READY", "STARTING", "DRAINING", "DESIRED", "REASON",
    ]
    assert lines[1].split()[:6] == ["hello", "main.handle", "4", "0", "10", "2"]
    assert lines[2].split() == ["sparse"] + ["-"] * 9


def test_ls_reason_shows_the_first_line_of_a_load_error() -> None:
    error = "SyntaxError: invalid syntax (main.py, line 3)\n\nTraceback (most recent call last):\n  ..."
    long = "ModuleNotFoundError: No module named 'a_module_with_a_remarkably_long_name_indeed'"
    table = format_table([
        {"name": "syn", "load_error": error, "scaling": {"reason": "idle"}},
        {"name": "imp", "load_error": long},
        {"name": "ok", "load_error": None, "scaling": {"reason": "idle"}},
    ])
    syn, imp, ok = (line.split("  ")[-1].strip() for line in table.splitlines()[1:])
    assert syn == "load failed: SyntaxError: invalid syntax (main.py, line 3)"
    assert imp == "load failed: " + long[:57] + "..."
    assert ok == "idle"


def test_ls_json_prints_the_answer(
    fake: FakeGateway, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ls", "--json"], env) == 0
    assert json.loads(capsys.readouterr().out)["functions"][1] == {"name": "sparse"}


def test_format_table_tolerates_odd_entries() -> None:
    table = format_table([{"name": "x", "containers": "weird"}, "not-a-dict"])
    assert [line.split() for line in table.splitlines()[1:]] == [["x"] + ["-"] * 9, ["-"] * 10]


def test_rm_deletes(fake: FakeGateway, env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rm", "hello"], env) == 0
    assert (fake.requests[0].method, fake.requests[0].path) == ("DELETE", "/system/functions/hello")
    assert capsys.readouterr().out == "removed hello\n"


def test_rm_missing_exits_1(
    fake: FakeGateway, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rm", "missing"], env) == 1
    assert capsys.readouterr().err == "hearth: 404 not_found: no function named 'missing'\n"


def test_global_options_work_after_the_subcommand(
    fake: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {"HEARTH_GATEWAY_URL": "http://127.0.0.1:1", "HEARTH_ADMIN_TOKEN": "nope"}
    assert main(["--gateway", fake.url, "rm", "hello", "--token", TOKEN], environ) == 0
    assert main(["rm", "hello", "--gateway", fake.url, "--token", TOKEN], environ) == 0
    assert [r.headers["Authorization"] for r in fake.requests] == [f"Bearer {TOKEN}"] * 2


def test_unreachable_gateway_suggests_hearth_up(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    assert main(["invoke", "hello"], {"HEARTH_GATEWAY_URL": url}) == 2
    err = capsys.readouterr().err
    assert f"the gateway at {url} does not answer" in err
    assert "hearth up" in err
    assert "Traceback" not in err


# --- up (the pure parts) ----------------------------------------------------


def test_up_environment_and_token(tmp_path: Path) -> None:
    environ = {"HEARTH_DATA_DIR": str(tmp_path), "PATH": "/bin"}
    token, where = cli_up.resolve_up_token(environ, None)
    assert where == str(tmp_path / "admin-token")
    assert cli_up.resolve_up_token(environ, None) == (token, where)
    assert cli_up.resolve_up_token({**environ, "HEARTH_ADMIN_TOKEN": "t" * 9}, None)[1] == (
        "HEARTH_ADMIN_TOKEN"
    )
    env = cli_up.child_environ(environ, tmp_path, token, remove_on_exit=True)
    assert env == {
        "HEARTH_DATA_DIR": str(tmp_path),
        "PATH": "/bin",
        "HEARTH_ADMIN_TOKEN": token,
        "HEARTH_REMOVE_ON_EXIT": "true",
    }
    assert "HEARTH_REMOVE_ON_EXIT" not in cli_up.child_environ(environ, tmp_path, token, False)


def test_up_refuses_when_a_gateway_already_answers(
    fake: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {"HEARTH_GATEWAY_URL": fake.url, "HEARTH_DATA_DIR": str(tmp_path / "d")}
    assert main(["up"], environ) == 1
    assert "already answers" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_wait_ready_reports_a_child_that_exits() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    child = cli_up.Child("pool manager", process)
    url = f"http://127.0.0.1:{_free_port()}"
    problem = cli_up.wait_ready(url, [child], cli_up.StopSignals(), timeout_s=5)
    assert problem == "the pool manager exited before Hearth was ready (exit code 3)"


def test_stop_kills_a_child_that_ignores_sigterm() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " print(1, flush=True); time.sleep(60)"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"1\n"  # handler installed
    cli_up.stop(cli_up.Child("gateway", process), timeout_s=0.3, impatient=lambda: False)
    process.stdout.close()
    assert process.returncode == -9
    assert cli_up.describe_exit(process.returncode) == "killed by SIGKILL"
