"""POST /execute against real Docker: results, bad input, and hostile code contained.

Every hostile run is followed by a plain one on the same pool, which must
work. The hostile stack has one sandbox container at most, so a run that
leaves no limit hit is followed on the very container it ran in (the
X-Hearth-Container header says which), and one that hits a limit is
followed on its replacement.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hearth.runtime_client import RuntimeConnection
from tests.integration.stack import Stack, pool_containers

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

MAX_TIMEOUT_S = 5
OUTPUT_LIMIT_BYTES = 64 << 10  # the gateway's default


@pytest.fixture(scope="module")
def sandbox(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("execute"),
        HEARTH_SANDBOX_MIN_SCALE="1",
        HEARTH_SANDBOX_MAX_SCALE="1",
        HEARTH_EXECUTE_MAX_TIMEOUT_S=str(MAX_TIMEOUT_S),
    )
    try:
        yield s.up()
    finally:
        s.down()


def execute(stack: Stack, code: str, **fields: Any) -> tuple[dict[str, Any], str]:
    """Run ``code``; the answer and the container that ran it."""
    payload = {"language": "python", "code": textwrap.dedent(code), **fields}
    status, headers, body = stack.request("POST", "/execute", payload)
    assert status == 200, (status, body)
    return json.loads(body), headers["X-Hearth-Container"]


def sandbox_socket(stack: Stack) -> str:
    """The runtime socket of the (first) ready sandbox container, from the routing table."""
    req = urllib.request.Request(f"http://127.0.0.1:{stack.control_port}/v1/routes?after=-1",
                                 headers={"Authorization": f"Bearer {stack.token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["functions"]["_execute"]["containers"][0]["socket"])


def assert_next_run_works(stack: Stack) -> str:
    result, container = execute(stack, "print(6 * 7)")
    assert (result["status"], result["stdout"], result["stderr"]) == ("ok", "42\n", ""), result
    return container


# --- what a caller sees -------------------------------------------------------


def test_hello_world(sandbox: Stack) -> None:
    result, _ = execute(sandbox, "print('hello, world')")
    assert result == {
        "status": "ok", "stdout": "hello, world\n", "stderr": "", "exit_code": 0, "signal": None,
        "timed_out": False, "truncated": False, "duration_ms": result["duration_ms"],
    }
    assert 0 < result["duration_ms"] < 1000


def test_stdin_args_and_files(sandbox: Stack) -> None:
    code = """
        import sys, helper
        print(helper.shout(sys.stdin.read()), sys.argv[1:])
        print(open("data/in.txt").read(), open("raw.bin", "rb").read())
    """
    files = [
        {"name": "helper.py", "content": "def shout(s):\n    return s.upper()\n"},
        {"name": "data/in.txt", "content": "from a file"},
        {"name": "raw.bin", "content": base64.b64encode(b"\x00\xff").decode(), "encoding": "base64"},
    ]
    result, _ = execute(sandbox, code, stdin="quiet", args=["-x", "two words"], files=files)
    assert result["stdout"] == "QUIET ['-x', 'two words']\nfrom a file b'\\x00\\xff'\n", result


def test_exceptions_and_exit_codes_read_as_for_python(sandbox: Stack) -> None:
    result, _ = execute(sandbox, "def f():\n    raise ValueError('boom')\nf()\n")
    assert (result["status"], result["exit_code"]) == ("error", 1)
    assert 'File "main.py", line 2, in f' in result["stderr"]
    assert result["stderr"].endswith("ValueError: boom\n")
    assert "hearth" not in result["stderr"] and "zygote" not in result["stderr"]
    result, _ = execute(sandbox, "import sys, atexit\natexit.register(print, 'bye')\nsys.exit(3)")
    assert (result["status"], result["exit_code"], result["stdout"]) == ("error", 3, "bye\n")
    result, _ = execute(sandbox, "print('ok'")
    assert result["status"] == "error" and "SyntaxError" in result["stderr"]


def test_limits_above_the_maxima_are_capped(sandbox: Stack) -> None:
    code = """
        import resource
        print(resource.getrlimit(resource.RLIMIT_CPU)[0], resource.getrlimit(resource.RLIMIT_AS)[0] >> 20)
    """
    result, _ = execute(sandbox, code, timeout_s=10**6, memory_mb=10**6)
    cpu_s, address_space_mb = map(int, result["stdout"].split())
    assert cpu_s == MAX_TIMEOUT_S + 1
    assert 256 < address_space_mb < 256 + 200  # the 256 MB maximum, on top of the interpreter


BAD_REQUESTS: list[tuple[Any, str]] = [
    ([], "JSON object"),
    ({"language": "cobol", "code": "x"}, "unknown language"),
    ({"language": "python"}, "code is required"),
    ({"code": 42}, "code must be a string"),
    ({"code": "x" * (256 * 1024 + 1)}, "code is"),
    ({"code": "", "stdin": "x" * (1024 * 1024 + 1)}, "stdin is"),
    ({"code": "", "stdin": 5}, "stdin must be a string"),
    ({"code": "", "files": [{"name": "../x", "content": ""}]}, "climbs out"),
    ({"code": "", "files": [{"name": "a/../../x", "content": ""}]}, "climbs out"),
    ({"code": "", "files": [{"name": "/etc/passwd", "content": ""}]}, "absolute"),
    ({"code": "", "files": [{"name": "a\\b", "content": ""}]}, "not allowed"),
    ({"code": "", "files": [{"name": "main.py", "content": ""}]}, "main.py"),
    ({"code": "", "files": [{"name": f"f{i}", "content": ""} for i in range(33)]}, "files given"),
    ({"code": "", "files": [{"name": "big", "content": "x" * (1024 * 1024 + 1)}]}, "the files hold"),
    ({"code": "", "files": [{"name": "b", "content": "!!", "encoding": "base64"}]}, "base64"),
    ({"code": "", "files": "main.py"}, "files must be a list"),
    ({"code": "", "timeout_s": "abc"}, "timeout_s"),
    ({"code": "", "timeout_s": -1}, "timeout_s"),
    ({"code": "", "timeout_s": True}, "timeout_s"),
    ({"code": "", "memory_mb": "lots"}, "memory_mb"),
    ({"code": "", "memory_mb": 1.5}, "memory_mb"),
    ({"code": "", "memory_mb": 4}, "at least 16"),
    ({"code": "", "args": "-v"}, "args must be a list"),
    ({"code": "", "args": [1]}, "args must be a list"),
    ({"code": "", "compile_timeout": 1}, "unknown field"),
]


@pytest.mark.parametrize(("payload", "fragment"), BAD_REQUESTS)
def test_bad_requests_are_400_with_a_clear_message(sandbox: Stack, payload: Any, fragment: str) -> None:
    status, _, body = sandbox.request("POST", "/execute", payload)
    assert status == 400, body
    error = json.loads(body)["error"]
    assert error["code"] == "bad_request" and fragment in error["message"], error


def test_a_body_that_is_not_json_is_400(sandbox: Stack) -> None:
    status, _, body = sandbox.request("POST", "/execute", b"{nope")
    assert status == 400 and b"not valid JSON" in body


def test_huge_stdin_is_refused_and_stdin_at_the_cap_is_fed_whole(sandbox: Stack) -> None:
    status, _, _ = sandbox.request("POST", "/execute", {"code": "", "stdin": "x" * (4 << 20)})
    assert status == 400
    result, _ = execute(sandbox, "import sys; print(len(sys.stdin.read()))", stdin="y" * (1 << 20))
    assert result["stdout"] == f"{1 << 20}\n"


# --- hostile code ------------------------------------------------------------


def assert_recycled(stack: Stack, hostile_container: str) -> None:
    assert assert_next_run_works(stack) != hostile_container, "a container that hit a limit must go"
    deadline = time.monotonic() + 30
    while any(c.startswith(hostile_container) for c in pool_containers(stack.pool_id)):
        assert time.monotonic() < deadline, "the recycled container was never removed"
        time.sleep(0.2)


def test_fork_bomb(sandbox: Stack) -> None:
    code = """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """
    result, container = execute(sandbox, code, timeout_s=1)
    assert (result["status"], result["timed_out"], result["signal"]) == ("timeout", True, "SIGKILL")
    assert_recycled(sandbox, container)
    result, _ = execute(sandbox, "import os; print(sum(p.isdigit() for p in os.listdir('/proc')))")
    assert int(result["stdout"]) == 3  # the supervisor, the zygote and this run: nothing else


@pytest.mark.parametrize("code", [
    "x = bytearray(2 << 30)",
    "chunks = []\nwhile True:\n    chunks.append(bytearray(10 << 20))",
])
def test_memory_bomb(sandbox: Stack, code: str) -> None:
    result, container = execute(sandbox, code, memory_mb=64)
    assert result["status"] == "memory", result
    assert "MemoryError" in result["stderr"]
    assert_recycled(sandbox, container)


@pytest.mark.parametrize("code", ["while True:\n    pass", "import time\ntime.sleep(60)"])
def test_runs_past_the_timeout_are_killed(sandbox: Stack, code: str) -> None:
    result, container = execute(sandbox, code, timeout_s=1)
    assert (result["status"], result["timed_out"], result["exit_code"]) == ("timeout", True, None)
    assert 1000 <= result["duration_ms"] < 3000
    assert_recycled(sandbox, container)


def test_a_daemonised_child_does_not_outlive_its_run(sandbox: Stack) -> None:
    code = """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                while True:
                    with open("/dev/shm/heartbeat", "a") as f:
                        f.write("x")
                    time.sleep(0.01)
            os._exit(0)
        time.sleep(0.1)
        print(open("/dev/shm/heartbeat").read().count("x") > 0)
    """
    result, container = execute(sandbox, code)
    assert result["stdout"] == "True\n", result
    check = """
        import os, time
        time.sleep(0.2)
        print(os.listdir("/dev/shm"), sum(p.isdigit() for p in os.listdir("/proc")))
    """
    result, again = execute(sandbox, check)
    assert again == container, "the daemon's run hit no limit: its container stays"
    assert result["stdout"] == "[] 3\n", result


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_output_flood_is_capped(sandbox: Stack, stream: str) -> None:
    code = f"import sys\nwhile True:\n    sys.{stream}.write('x' * 1000)"
    result, container = execute(sandbox, code)
    assert (result["status"], result["truncated"]) == ("output_limit", True), result
    assert len(result[stream]) == OUTPUT_LIMIT_BYTES
    assert_recycled(sandbox, container)


def test_disk_fill_of_the_scratch_space(sandbox: Stack) -> None:
    code = """
        with open("filler", "wb") as f:
            while True:
                f.write(b"x" * (1 << 20))
    """
    result, container = execute(sandbox, code)
    assert result["status"] == "error"
    assert "No space left on device" in result["stderr"] or "File too large" in result["stderr"]
    assert_recycled(sandbox, container)
    result, _ = execute(sandbox, "import shutil; print(shutil.disk_usage('/tmp').used < (1 << 20))")
    assert result["stdout"] == "True\n"


def test_files_left_behind_are_invisible_to_the_next_run(sandbox: Stack) -> None:
    code = """
        import ctypes, os
        for path in ("/tmp/leak", "/dev/shm/leak", "leak", "/hearth/sock/leak", "/dev/mqueue/leak"):
            try:
                with open(path, "w") as f:
                    f.write("secret")
            except OSError:
                pass
        libc = ctypes.CDLL(None)
        segment = libc.shmget(0x4845, 4096, 0o1600)  # IPC_CREAT | 0600
        print(segment >= 0)
    """
    result, container = execute(sandbox, code)
    assert result["stdout"] == "True\n", result
    check = """
        import os
        print(os.listdir("/tmp") == [os.path.basename(os.getcwd())], os.listdir("/dev/shm"),
              os.listdir("."), os.listdir("/hearth/sock"), os.listdir("/dev/mqueue"),
              len(open("/proc/sysvipc/shm").read().splitlines()))
    """
    result, again = execute(sandbox, check)
    assert again == container
    assert result["stdout"] == "True [] ['main.py'] ['runtime.sock'] [] 1\n", result


def test_symlinks_cannot_trick_the_cleanup(sandbox: Stack) -> None:
    code = """
        import os
        os.symlink("/opt/hearth/runtime", "runtime")
        os.symlink("/tmp/..", "up")
        os.symlink("/hearth/sock", "/dev/shm/sock")
        os.symlink("/opt/hearth", "/dev/shm/opt")
        os.symlink("/", "/dev/shm/root")
        os.makedirs("locked/deeper")
        open("locked/deeper/file", "w").close()
        os.chmod("locked/deeper", 0)
        os.chmod("locked", 0)
        print("planted")
    """
    result, container = execute(sandbox, code)
    assert result["stdout"] == "planted\n", result
    check = """
        import os
        print(os.listdir("/dev/shm"), os.path.exists("/hearth/sock/runtime.sock"),
              os.path.exists("/opt/hearth/runtime/server.py"))
    """
    result, again = execute(sandbox, check)
    assert (again, result["stdout"]) == (container, "[] True True\n"), result


def test_no_network_but_loopback(sandbox: Stack) -> None:
    code = """
        import os, socket
        print(sorted(os.listdir("/sys/class/net")))
        try:
            socket.create_connection(("127.0.0.1", 9), timeout=1)
            print("connected")
        except OSError as exc:
            print(type(exc).__name__)
    """
    result, _ = execute(sandbox, code)
    assert result["stdout"] in ("['lo']\nConnectionRefusedError\n", "['lo']\nPermissionError\n"), result
    assert_next_run_works(sandbox)


def test_no_host_files_no_docker_socket_no_supervisor(sandbox: Stack) -> None:
    code = """
        import os, signal, socket
        print([os.path.exists(p) for p in ("/var/run/docker.sock", "/run/docker.sock", "/work")])
        for path in ("/etc/shadow", "/proc/1/environ", "/proc/1/mem", f"/proc/{os.getppid()}/mem"):
            try:
                open(path, "rb").read(1)
                print("read", path)
            except OSError as exc:
                print(type(exc).__name__)
        for pid in (1, os.getppid()):  # the supervisor, the zygote
            try:
                os.kill(pid, signal.SIGTERM)
                print("signalled", pid)
            except OSError as exc:
                print(type(exc).__name__)
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect("/hearth/sock/runtime.sock")
            s.sendall(b"\\0\\0\\0\\x10\\0\\0\\0\\0" + b'{"op": "health"}')
            print("answered" if s.recv(100) else "closed")
        except OSError as exc:
            print(type(exc).__name__)
    """
    result, container = execute(sandbox, code)
    lines = result["stdout"].splitlines()
    assert lines[0] == "[False, False, False]", result
    assert lines[1:5] == ["PermissionError"] * 4, result
    assert lines[5:7] == ["PermissionError"] * 2, result
    assert lines[7] in ("closed", "ConnectionResetError", "BrokenPipeError"), result
    assert assert_next_run_works(sandbox) == container


def test_a_lost_zygote_is_replaced_without_losing_the_run(sandbox: Stack) -> None:
    container = assert_next_run_works(sandbox)
    kill_zygote = """if True:
        import os, signal
        for pid in filter(str.isdigit, os.listdir("/proc")):
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            if int(pid) not in (1, os.getpid()) and b"zygote" in cmdline:
                os.kill(int(pid), signal.SIGKILL)
                print(pid)
    """
    done = subprocess.run(["docker", "exec", "-u", "65534:65534", container, "python3", "-c", kill_zygote],
                          check=True, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().isdigit(), done
    assert assert_next_run_works(sandbox) == container


def test_environment_holds_nothing_of_hearths(sandbox: Stack) -> None:
    result, _ = execute(sandbox, "import os, json; print(json.dumps(dict(os.environ)))")
    env = json.loads(result["stdout"])
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "LANG"}, env
    assert sandbox.token not in result["stdout"]
    assert not any(key.startswith("HEARTH") for key in env)


def test_nothing_of_an_earlier_run_is_left_in_memory(sandbox: Stack) -> None:
    secret_tail = "7f3a9c1e-only-in-run-one"
    execute(sandbox, f"SECRET = 'hearth-canary-' + '{secret_tail}'\nprint(len(SECRET))",
            stdin="hearth-canary-" + secret_tail)
    # Searches this process's memory for the prefix, comparing what follows
    # by hash, so that the whole secret never exists in this run itself.
    scan = """
        import hashlib, re
        wanted = hashlib.sha256(TAIL.encode()).hexdigest()
        prefix = b"hearth-canary-"
        found = 0
        with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
            for line in maps:
                span, perms = line.split()[:2]
                if not perms.startswith("r") or "[v" in line:
                    continue
                lo, hi = (int(x, 16) for x in span.split("-"))
                try:
                    mem.seek(lo)
                    data = mem.read(hi - lo)
                except OSError:
                    continue
                for m in re.finditer(re.escape(prefix), data):
                    tail = data[m.end():m.end() + len(TAIL)]
                    found += hashlib.sha256(tail).hexdigest() == wanted
        print(found)
    """
    blind = "TAIL = '" + secret_tail[::-1] + "'[::-1]\n" + textwrap.dedent(scan)
    result, _ = execute(sandbox, blind)
    assert result["stdout"] == "0\n", result
    control = f"KEPT = 'hearth-canary-{secret_tail}'\n" + blind  # the scan does find a live copy
    result, _ = execute(sandbox, control)
    assert int(result["stdout"]) >= 1, result


# --- a crowd -----------------------------------------------------------------


async def test_a_hundred_concurrent_executions(engine: None, tmp_path: Path) -> None:
    s = Stack(tmp_path, HEARTH_SANDBOX_MIN_SCALE="1", HEARTH_SANDBOX_MAX_SCALE="4")
    try:
        await asyncio.to_thread(s.up)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

            async def run(i: int) -> tuple[int, dict[str, Any], str]:
                payload = {"language": "python", "code": f"import time\ntime.sleep(0.05)\nprint({i} * 3)"}
                async with session.post(f"{s.url}/execute", json=payload) as resp:
                    return resp.status, await resp.json(), resp.headers.get("X-Hearth-Container", "")

            answers = await asyncio.wait_for(asyncio.gather(*(run(i) for i in range(100))), 120)
        for i, (status, result, _) in enumerate(answers):
            assert status == 200, (result, s.log("gateway"), s.log("pool_manager"))
            assert (result["status"], result["stdout"]) == ("ok", f"{i * 3}\n"), result
        # Five seconds of work queued on one sandbox: the pool scaled out on the execute queue.
        assert len({container for _, _, container in answers}) >= 2, answers
    finally:
        await asyncio.to_thread(s.down)


async def test_a_container_that_refuses_runs_is_routed_around(engine: None, tmp_path: Path) -> None:
    # Its quota spent behind the gateway's back (another gateway, say): it
    # refuses, and the gateway waits for its replacement instead of failing.
    s = Stack(tmp_path, HEARTH_SANDBOX_MIN_SCALE="1", HEARTH_SANDBOX_MAX_SCALE="1",
              HEARTH_SANDBOX_MAX_RUNS="2")
    try:
        await asyncio.to_thread(s.up)
        first = await asyncio.to_thread(assert_next_run_works, s)
        socket_path = await asyncio.to_thread(sandbox_socket, s)
        conn = await RuntimeConnection.open(socket_path)
        try:
            answer, _ = await conn.call({"op": "execute"}, b'{"code": ""}', 30)
            assert answer["recycle"] is True  # its second and last run
            answer, _ = await conn.call({"op": "execute"}, b'{"code": ""}', 30)
            assert (answer["outcome"], answer["recycle"]) == ("refused", True)
        finally:
            conn.close()
        assert await asyncio.to_thread(assert_next_run_works, s) != first
    finally:
        await asyncio.to_thread(s.down)


def test_a_container_is_recycled_after_its_run_quota(engine: None, tmp_path: Path) -> None:
    s = Stack(tmp_path, HEARTH_SANDBOX_MIN_SCALE="1", HEARTH_SANDBOX_MAX_SCALE="1",
              HEARTH_SANDBOX_MAX_RUNS="3")
    try:
        s.up()
        runs = [run_with_start(s) for _ in range(4)]
        assert len({container for container, _ in runs[:3]}) == 1
        assert runs[3][0] != runs[0][0]
        # Each container's first run is its cold start, as for functions.
        assert [start for _, start in runs] == ["cold", "warm", "warm", "cold"]
    finally:
        s.down()


def run_with_start(stack: Stack) -> tuple[str, str]:
    status, headers, body = stack.request("POST", "/execute", {"code": "print(6 * 7)"})
    assert status == 200 and json.loads(body)["stdout"] == "42\n", (status, body)
    return headers["X-Hearth-Container"], headers["X-Hearth-Start"]
