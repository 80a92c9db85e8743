"""The runtime server, run as a real process and driven over its unix socket."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import stat
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from runtime import protocol
from tests.runtime.conftest import Client, Server

pytestmark = pytest.mark.timeout(30)

HANDLER = """
    import asyncio, json, os, signal, time

    def handle(event, context):
        kind = event.path.strip("/")
        if kind == "dict":
            return {"a": 1, "pid": os.getpid()}
        if kind == "list":
            return [1, "two"]
        if kind == "str":
            return "héllo"
        if kind == "bytes":
            return b"\\x00\\xff"
        if kind == "none":
            return None
        if kind == "full":
            return {"status": 201, "headers": {"X-Thing": "yes"}, "body": {"made": True}}
        if kind == "full-typed":
            return {"status": 418, "headers": {"Content-Type": "text/x-tea"}, "body": "short"}
        if kind == "raise":
            raise ValueError("boom")
        if kind == "bad":
            return object()
        if kind == "sleep":
            started = time.time()
            time.sleep(float(event.query.get("s", "0.3")))
            return {"start": started, "end": time.time(), "pid": os.getpid()}
        if kind == "exit":
            os._exit(3)
        if kind == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        if kind == "env":
            return {"GREETING": os.environ.get("GREETING")}
        return {
            "method": event.method, "path": event.path, "query": event.query,
            "query_string": event.query_string, "text": event.text,
            "json": event.json() if event.body else None,
            "ct_upper": event.headers.get("Content-Type"),
            "ct_item": event.headers["CONTENT-TYPE"] if "content-type" in event.headers else None,
            "has_ct": "Content-type" in event.headers,
            "multi": event.headers.get("x-multi"),
            "function": context.function_name, "request_id": context.request_id,
            "call_id": context.call_id, "deadline": context.deadline,
            "remaining": context.remaining_s(), "now": time.time(),
        }
"""

ASYNC_HANDLER = """
    import asyncio

    async def handle(event, context):
        await asyncio.sleep(0.01)
        return {"async": True, "loop": id(asyncio.get_running_loop())}
"""


def loaded(server: Server, files: dict[str, str] | None = None, **meta: Any) -> Client:
    client = server.client()
    reply = client.load(files or {"main.py": HANDLER}, **meta)
    assert reply["ok"] is True, reply
    return client


def error_of(meta: dict[str, Any], body: bytes) -> dict[str, Any]:
    assert meta["headers"] == [["content-type", "application/json"]]
    return json.loads(body)["error"]


def test_health_before_load(server: Server) -> None:
    health = server.client().health()
    assert health == {"ok": True, "function": None, "version": None, "workers": 0,
                      "busy": 0, "pid": server.proc.pid}


def test_invoke_before_load_is_refused(server: Server) -> None:
    meta, body = server.client().invoke()
    assert (meta["status"], meta["outcome"]) == (503, "refused")
    assert error_of(meta, body)["code"] == "not_loaded"


def test_load_reports_workers_and_health_names_the_function(server: Server) -> None:
    client = server.client()
    assert client.load({"main.py": HANDLER}, concurrency=2) == {"ok": True, "workers": 2}
    health = client.health()
    assert (health["function"], health["version"], health["workers"]) == ("fn", "v1", 2)
    assert health["busy"] == 0


@pytest.mark.parametrize(("kind", "status", "ctype", "expected"), [
    ("dict", 200, "application/json", None),
    ("list", 200, "application/json", b'[1,"two"]'),
    ("str", 200, "text/plain; charset=utf-8", "héllo".encode()),
    ("bytes", 200, "application/octet-stream", b"\x00\xff"),
])
def test_return_values_become_responses(server: Server, kind: str, status: int, ctype: str,
                                        expected: bytes | None) -> None:
    meta, body = loaded(server).invoke(f"/{kind}")
    assert (meta["status"], meta["outcome"]) == (status, "ok")
    assert meta["headers"] == [["content-type", ctype]]
    if expected is None:
        assert json.loads(body)["a"] == 1
    else:
        assert body == expected


def test_none_is_204_without_body(server: Server) -> None:
    meta, body = loaded(server).invoke("/none")
    assert (meta["status"], meta["headers"], body) == (204, [], b"")


def test_full_response_keeps_status_and_headers(server: Server) -> None:
    client = loaded(server)
    meta, body = client.invoke("/full")
    assert meta["status"] == 201
    assert meta["headers"] == [["X-Thing", "yes"], ["content-type", "application/json"]]
    assert json.loads(body) == {"made": True}
    meta, body = client.invoke("/full-typed")
    assert (meta["status"], meta["headers"], body) == (418, [["Content-Type", "text/x-tea"]],
                                                      b"short")


def test_async_handler(server: Server) -> None:
    client = loaded(server, {"main.py": ASYNC_HANDLER})
    first = json.loads(client.invoke()[1])
    second = json.loads(client.invoke()[1])
    assert first["async"] is True
    assert first["loop"] == second["loop"]  # one loop per worker, made once


def test_event_and_context_fields(server: Server) -> None:
    client = loaded(server)
    headers = [["Content-Type", "application/json"], ["X-Multi", "a"], ["x-multi", "b"]]
    meta, body = client.invoke("/echo/deeper", b'{"k": [1, 2]}', method="POST",
                               query="a=1&b=2&a=3&empty=", headers=headers, id="rid-7",
                               call_id="call-9", timeout_s=4.0)
    assert meta["status"] == 200, body
    got = json.loads(body)
    assert (got["method"], got["path"]) == ("POST", "/echo/deeper")
    assert got["query"] == {"a": "3", "b": "2", "empty": ""}
    assert got["query_string"] == "a=1&b=2&a=3&empty="
    assert (got["text"], got["json"]) == ('{"k": [1, 2]}', {"k": [1, 2]})
    assert got["ct_upper"] == got["ct_item"] == "application/json"
    assert got["has_ct"] is True
    assert got["multi"] == "a, b"
    assert (got["function"], got["request_id"], got["call_id"]) == ("fn", "rid-7", "call-9")
    assert 3.0 < got["deadline"] - got["now"] <= 4.0
    assert 3.0 < got["remaining"] <= 4.0


def test_path_always_starts_with_slash(server: Server) -> None:
    _, body = loaded(server).invoke("")
    assert json.loads(body)["path"] == "/"


def test_start_is_cold_then_warm(server: Server) -> None:
    client = loaded(server)
    starts = [client.invoke("/dict")[0]["start"] for _ in range(3)]
    assert starts == ["cold", "warm", "warm"]
    assert client.invoke("/dict")[0]["duration_ms"] >= 0


def test_env_is_applied(server: Server) -> None:
    client = loaded(server, env={"GREETING": "hi"})
    assert json.loads(client.invoke("/env")[1]) == {"GREETING": "hi"}


def test_handler_exception_is_500_naming_type_and_message(server: Server) -> None:
    client = loaded(server)
    meta, body = client.invoke("/raise")
    assert (meta["status"], meta["outcome"]) == (500, "error")
    assert error_of(meta, body) == {"code": "handler_error", "type": "ValueError",
                                    "message": "ValueError: boom"}
    assert client.invoke("/dict")[0]["status"] == 200  # the worker keeps serving
    # The traceback reaches the container's log as JSON lines tagged with the request.
    entries = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    traceback_lines = [e for e in entries if 'raise ValueError("boom")' in e["msg"]]
    assert traceback_lines and traceback_lines[0]["request_id"] == "req-1"
    assert traceback_lines[0]["stream"] == "stderr" and traceback_lines[0]["function"] == "fn"


def test_unserialisable_result_is_500(server: Server) -> None:
    meta, body = loaded(server).invoke("/bad")
    assert (meta["status"], meta["outcome"]) == (500, "error")
    assert error_of(meta, body)["code"] == "invalid_response"


def pid_of(client: Client) -> int:
    meta, body = client.invoke("/dict")
    assert meta["status"] == 200
    return int(json.loads(body)["pid"])


def test_timeout_kills_worker_and_next_request_works(server: Server) -> None:
    client = loaded(server)
    old_pid = pid_of(client)
    meta, body = client.invoke("/sleep", query="s=30", timeout_s=0.3)
    assert (meta["status"], meta["outcome"]) == (504, "timeout")
    assert error_of(meta, body)["code"] == "timeout"
    assert not os.path.exists(f"/proc/{old_pid}")  # killed and reaped
    new_pid = pid_of(client)
    assert new_pid != old_pid
    assert client.health()["workers"] == 1


@pytest.mark.parametrize(("kind", "named"), [("exit", "exited with status 3"),
                                             ("segv", "SIGSEGV")])
def test_crash_is_502_and_next_request_works(server: Server, kind: str, named: str) -> None:
    client = loaded(server)
    old_pid = pid_of(client)
    meta, body = client.invoke(f"/{kind}")
    assert (meta["status"], meta["outcome"]) == (502, "crash")
    error = error_of(meta, body)
    assert error["code"] == "handler_crashed"
    assert named in error["message"]
    assert not os.path.exists(f"/proc/{old_pid}")  # reaped, not a zombie
    assert pid_of(client) != old_pid


def wait_idle(server: Server) -> None:
    # The client has the reply a moment before the worker records that it is
    # done; a kill in between is a death mid-reply, which closes the connection.
    deadline = time.monotonic() + 5
    while server.client().health()["busy"] and time.monotonic() < deadline:
        time.sleep(0.01)


def test_worker_killed_while_idle_is_replaced(server: Server) -> None:
    client = loaded(server)
    old_pid = pid_of(client)
    wait_idle(server)
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{old_pid}") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not os.path.exists(f"/proc/{old_pid}")
    meta, _ = client.invoke("/dict")
    assert (meta["status"], meta["outcome"]) == (200, "ok")


def test_health_answers_while_every_worker_is_busy(server: Server) -> None:
    loaded(server)
    slow = server.client()
    thread = threading.Thread(target=slow.invoke, args=("/sleep",), kwargs={"query": "s=1.5"})
    thread.start()
    try:
        time.sleep(0.3)
        health = server.client(timeout_s=0.5).health()
        assert (health["workers"], health["busy"]) == (1, 1)
    finally:
        thread.join(5)


def test_second_load_is_refused(server: Server) -> None:
    client = loaded(server)
    reply = client.load({"main.py": ASYNC_HANDLER})
    assert reply["ok"] is False
    assert reply["error"]["code"] == "already_loaded"
    assert json.loads(client.invoke("/dict")[1])["a"] == 1  # still the first code


@pytest.mark.parametrize(("files", "handler", "named"), [
    ({"main.py": "def handle(:\n"}, "main.handle", "SyntaxError"),
    ({"main.py": "x = 1\n"}, "main.handle", "AttributeError"),
    ({"main.py": "raise RuntimeError('at import')\n"}, "main.handle", "RuntimeError: at import"),
    ({"main.py": "import sys\nsys.exit(4)\n"}, "main.handle", "SystemExit"),
    ({"main.py": "x = 1\n"}, "handle", "ValueError"),
    ({"other.py": "x = 1\n"}, "main.handle", "ModuleNotFoundError"),
])
def test_failed_load_keeps_server_up_and_allows_retry(server: Server, files: dict[str, str],
                                                     handler: str, named: str) -> None:
    client = server.client()
    reply = client.load(files, handler=handler)
    assert reply["ok"] is False
    assert reply["error"]["code"] == "load_failed"
    assert reply["error"]["message"].startswith(named)
    assert client.health()["function"] is None
    assert client.load({"main.py": HANDLER})["ok"] is True
    assert json.loads(client.invoke("/dict")[1])["a"] == 1


def test_load_of_a_dotted_module(server: Server) -> None:
    files = {"pkg/__init__.py": "", "pkg/api.py": "def entry(event, context):\n    return 'ok'\n"}
    client = loaded(server, files, handler="pkg.api.entry")
    assert client.invoke()[1] == b"ok"


def evil_zip(name: str, symlink: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("main.py", "def handle(event, context):\n    return 'ok'\n")
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd" if symlink else "pwned")
    return buf.getvalue()


@pytest.mark.parametrize(("name", "symlink"), [
    ("../escaped.txt", False),
    ("sub/../../escaped.txt", False),
    ("/tmp/hearth-absolute-escape.txt", False),
    ("link.txt", True),
])
def test_unsafe_archive_paths_are_rejected(server: Server, name: str, symlink: bool) -> None:
    client = server.client()
    reply = client.load(evil_zip(name, symlink))
    assert reply["ok"] is False
    assert reply["error"]["code"] == "load_failed"
    assert "unsafe path" in reply["error"]["message"]
    assert not (server.code_dir.parent / "escaped.txt").exists()
    assert not os.path.exists("/tmp/hearth-absolute-escape.txt")
    assert not (server.code_dir / "link.txt").exists()


def test_not_a_zip_is_a_failed_load(server: Server) -> None:
    reply = server.client().load(b"not a zip")
    assert reply["error"]["code"] == "load_failed"
    assert "BadZipFile" in reply["error"]["message"]


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def run_two_slow(server: Server) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    clients = [server.client(), server.client()]

    def call(client: Client) -> None:
        meta, body = client.invoke("/sleep", query="s=0.4")
        assert meta["status"] == 200
        results.append(json.loads(body))

    threads = [threading.Thread(target=call, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 2
    return results


def test_concurrency_two_runs_requests_side_by_side(server: Server) -> None:
    loaded(server, concurrency=2)
    a, b = run_two_slow(server)
    assert a["pid"] != b["pid"]
    assert overlap(a, b)


def test_concurrency_one_runs_requests_one_after_another(server: Server) -> None:
    loaded(server, concurrency=1)
    a, b = run_two_slow(server)
    assert a["pid"] == b["pid"]
    assert not overlap(a, b)


def test_persistent_connection_carries_many_requests(server: Server) -> None:
    client = loaded(server)
    for i in range(50):
        _, body = client.invoke("/echo", str(i).encode())
        assert json.loads(body)["text"] == str(i)


def test_sigterm_exits_cleanly_and_removes_socket(server: Server) -> None:
    client = loaded(server, concurrency=2)
    pids = {pid_of(client) for _ in range(4)}
    health = client.health()
    assert health["workers"] == 2
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(5) == 0
    assert not os.path.exists(server.socket_path)
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}")


def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    sock_dir = tempfile.mkdtemp(prefix="hearth-rt-", dir="/tmp")
    stale = os.path.join(sock_dir, "runtime.sock")
    with open(stale, "w") as fh:
        fh.write("stale")
    srv = Server(tmp_path, sock_dir)
    try:
        assert stat.S_ISSOCK(os.stat(stale).st_mode)
        assert stat.S_IMODE(os.stat(stale).st_mode) == 0o777
    finally:
        srv.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_bad_frame_closes_connection_even_with_workers_forked(server: Server) -> None:
    # The workers were forked while this connection was open; had they kept
    # copies of its socket, the client would never see the close.
    client = loaded(server, concurrency=2)
    client.sock.sendall(b"\x00\x00\x00\x03\x00\x00\x00\x00not")
    assert client.sock.recv(1) == b""
    assert server.client().health()["ok"] is True


def test_unknown_op_is_answered(server: Server) -> None:
    reply, _ = server.client().call({"op": "dance"})
    assert reply["ok"] is False
    assert reply["error"]["code"] == "unknown_op"


def test_a_client_gone_before_its_reply_leaves_no_busy_worker(server: Server) -> None:
    loaded(server)
    gone = server.client()
    protocol.send_frame(gone.sock, {"op": "invoke", "id": "r", "method": "GET", "path": "/sleep",
                                    "query": "s=0.3", "headers": [], "timeout_s": 5.0})
    gone.close()
    time.sleep(0.8)  # the handler finishes and finds nobody to answer
    health = server.client().health()
    assert (health["workers"], health["busy"]) == (1, 0)
    meta, _ = server.client().invoke("/dict")
    assert meta["status"] == 200


def test_a_worker_killed_just_after_replying_never_leaves_its_client_hanging(server: Server) -> None:
    # Killed before or after it marks itself idle, the worker's connection is
    # either kept (and serves on) or closed: the client is told either way.
    loaded(server)
    outcomes = []
    for _ in range(50):
        client = server.client(timeout_s=3.0)
        pid = pid_of(client)
        os.kill(pid, signal.SIGKILL)
        try:
            meta, _ = client.invoke("/dict")
            outcomes.append(meta["status"])
        except (EOFError, ConnectionError):
            outcomes.append("closed")
        client.close()
    assert set(outcomes) <= {200, "closed"}, outcomes
