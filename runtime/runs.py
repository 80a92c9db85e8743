"""One /execute run as data: its request, its limits, and how its end is named.

Stdlib only, and pure except ``write_files`` and ``oom_kills``: the
sandbox's decisions live here so that they can be tested on any machine.

The ``execute`` op's body is JSON: ``{"code", "stdin", "args", "files":
[{"name", "content", "encoding": "utf8" | "base64"}], "timeout_s",
"memory_mb", "output_limit_bytes"}``. The gateway validates it first; the
runtime checks it again and clamps it to the maxima it was loaded with.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import signal
from dataclasses import dataclass
from typing import Any

FILE_PART = re.compile(r"[A-Za-z0-9._-]{1,128}")
MIN_MEMORY_MB = 16
OPEN_FILES = 1024
# RLIMIT_NPROC counts every process of the uid on the whole host (containers
# share uid 65534), so it is only a backstop: the container's pids limit is
# what stops a fork bomb.
PROCESSES = 4096


@dataclass(frozen=True)
class Limits:
    """The executor's maxima, from the pool manager's ``load``."""

    max_runs: int = 200
    max_timeout_s: float = 30.0
    max_memory_mb: int = 256
    max_output_bytes: int = 1 << 20
    processes: int = PROCESSES


def limits_from_meta(meta: dict[str, Any]) -> Limits:
    defaults = Limits()
    values: dict[str, Any] = {}
    for name in ("max_runs", "max_timeout_s", "max_memory_mb", "max_output_bytes", "processes"):
        value = meta.get(name, getattr(defaults, name))
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"{name} must be a positive number, not {value!r}")
        values[name] = value
    return Limits(**values)


@dataclass(frozen=True)
class RunRequest:
    """A validated run, clamped to the executor's limits."""

    code: bytes
    stdin: bytes
    args: list[str]
    files: list[tuple[str, bytes]]
    timeout_s: float
    memory_mb: int
    output_limit_bytes: int
    processes: int = PROCESSES

    def spec(self, scratch: str, env: dict[str, str]) -> bytes:
        """What the run's own process reads before it confines itself (see zygote.py)."""
        limits = {"cpu_s": math.ceil(self.timeout_s) + 1, "memory_mb": self.memory_mb,
                  "file_bytes": _scratch_bytes(), "open_files": OPEN_FILES, "processes": self.processes}
        run_env = {**env, "HOME": scratch, "TMPDIR": scratch}
        return json.dumps({"dir": scratch, "args": self.args, "env": run_env, "limits": limits}).encode()


def _scratch_bytes() -> int:
    try:
        st = os.statvfs("/tmp")
    except OSError:
        return 64 << 20
    return max(1 << 20, st.f_blocks * st.f_frsize)


def check_file_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError("a file name must be a non-empty string")
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") or not FILE_PART.fullmatch(p) for p in parts):
        raise ValueError(f"bad file name {name!r}: use relative paths of letters, digits, '.', '_', '-'")
    if name == "main.py":
        raise ValueError("main.py is the program itself; name the other files differently")
    return name


def _number(body: dict[str, Any], key: str, default: float, maximum: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{key} must be a positive number, not {value!r}")
    return min(float(value), maximum)


def _content(entry: dict[str, Any]) -> bytes:
    content, encoding = entry.get("content", ""), entry.get("encoding", "utf8")
    if not isinstance(content, str):
        raise ValueError("file content must be a string")
    if encoding == "utf8":
        return content.encode()
    if encoding == "base64":
        try:
            return base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("file content is not valid base64") from None
    raise ValueError(f"unknown file encoding {encoding!r}: use utf8 or base64")


def parse_request(body: bytes, limits: Limits) -> RunRequest:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"the execute body is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("code"), str):
        raise ValueError("the execute body must be an object with a string 'code'")
    stdin, args, files = data.get("stdin") or "", data.get("args") or [], data.get("files") or []
    if not isinstance(stdin, str):
        raise ValueError("stdin must be a string")
    if not isinstance(args, list) or not all(isinstance(a, str) and "\0" not in a for a in args):
        raise ValueError("args must be a list of strings")
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise ValueError("files must be a list of {name, content}")
    named = [(check_file_name(f.get("name")), _content(f)) for f in files]
    if len({name for name, _ in named}) != len(named):
        raise ValueError("two files have the same name")
    return RunRequest(
        code=data["code"].encode(), stdin=stdin.encode(), args=args, files=named,
        timeout_s=_number(data, "timeout_s", min(10.0, limits.max_timeout_s), limits.max_timeout_s),
        memory_mb=max(MIN_MEMORY_MB, int(_number(data, "memory_mb", 128, limits.max_memory_mb))),
        output_limit_bytes=int(_number(data, "output_limit_bytes", 64 << 10, limits.max_output_bytes)),
        processes=limits.processes,
    )


def write_files(scratch: str, request: RunRequest) -> None:
    """Put main.py and the extra files in a scratch directory nobody else has touched."""
    for name, content in [("main.py", request.code), *request.files]:
        path = os.path.join(scratch, name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as f:
            f.write(content)


def oom_kills() -> int | None:
    """The container's count of OOM kills (cgroup v2, then v1), None where unreadable."""
    for path, key in (("/sys/fs/cgroup/memory.events", "oom_kill"),
                      ("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill")):
        try:
            with open(path) as f:
                for line in f:
                    name, _, value = line.partition(" ")
                    if name == key:
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


def classify(wait_status: int | None, timed_out: bool, overflowed: bool, oom_killed: bool | None,
             stderr: bytes) -> tuple[str, int | None, str | None]:
    """(status, exit code, signal name) of a finished run."""
    if wait_status is None:  # the zygote died with the run: nothing to read
        return ("output_limit" if overflowed else "timeout" if timed_out else "error"), None, None
    code = os.waitstatus_to_exitcode(wait_status)
    exit_code, signum = (code, None) if code >= 0 else (None, -code)
    sig = _signal_name(signum) if signum is not None else None
    if overflowed:
        status = "output_limit"
    elif timed_out or signum == signal.SIGXCPU:
        status = "timeout"
    elif oom_killed or (signum == signal.SIGKILL and oom_killed is None):
        status = "memory"
    elif exit_code and _ends_in_memory_error(stderr):
        status = "memory"
    else:
        status = "ok" if exit_code == 0 else "error"
    return status, exit_code, sig


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def _ends_in_memory_error(stderr: bytes) -> bool:
    lines = stderr.rstrip().splitlines()
    return bool(lines) and lines[-1].startswith(b"MemoryError")
