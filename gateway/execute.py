"""``POST /execute``: one-shot Python in the sandbox pool.

``{"language": "python", "code", "stdin", "args", "files": [{"name",
"content", "encoding"}], "timeout_s", "memory_mb"}`` answers ``{"status",
"stdout", "stderr", "exit_code", "signal", "timed_out", "truncated",
"duration_ms"}``, status one of ok, error, timeout, memory, output_limit.

``parse_request`` is pure: every malformed request is a 400 that names the
field. ``timeout_s`` and ``memory_mb`` above the server's maxima are
capped, not refused, as a judge caps a contestant's limits. The run goes to
the built-in function ``_execute`` through the dispatcher like any call
(least connections, queue, breakers, safe retries of refusals). A run that
hit a limit, or its container's run quota, comes back with ``recycle``: the
dispatcher then sends that container nothing new and has the pool manager
replace it.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from gateway import metrics
from gateway.errors import BadRequest, Unavailable, UpstreamBroken
from gateway.execute_config import ExecuteConfig
from hearth import logs

if TYPE_CHECKING:
    from gateway.app import Gateway

SANDBOX = "_execute"  # the pool manager's built-in function (pool_manager/sandbox.py)
LANGUAGES = frozenset({"python", "python3", "py"})
FIELDS = frozenset({"language", "code", "stdin", "args", "files", "timeout_s", "memory_mb"})
FILE_FIELDS = frozenset({"name", "content", "encoding"})
FILE_PART = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_FILE_DEPTH = 8
MIN_MEMORY_MB = 16
RESULT_FIELDS = ("status", "exit_code", "signal", "timed_out", "truncated", "duration_ms")


@dataclass(frozen=True)
class ExecuteRequest:
    """A valid /execute request, with limits already capped."""

    code: str
    timeout_s: float
    memory_mb: int
    stdin: str = ""
    args: list[str] = field(default_factory=list)
    files: list[dict[str, str]] = field(default_factory=list)

    def body(self, output_limit_bytes: int) -> bytes:
        """The ``execute`` op's body for the runtime (runtime/runs.py)."""
        return orjson.dumps({
            "code": self.code, "stdin": self.stdin, "args": self.args, "files": self.files,
            "timeout_s": self.timeout_s, "memory_mb": self.memory_mb,
            "output_limit_bytes": output_limit_bytes,
        })


def _size_check(name: str, text: str, limit_bytes: int) -> None:
    size = len(text.encode())
    if size > limit_bytes:
        raise BadRequest(f"{name} is {size} bytes; at most {limit_bytes} are allowed")


def check_file_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise BadRequest("every file needs a non-empty string 'name'")
    if name.startswith("/"):
        raise BadRequest(f"file name {name!r} is absolute; give a path relative to the program's directory")
    parts = name.split("/")
    if ".." in parts:
        raise BadRequest(f"file name {name!r} climbs out of the program's directory with '..'")
    if len(parts) > MAX_FILE_DEPTH or not all(FILE_PART.fullmatch(p) and p != "." for p in parts):
        raise BadRequest(
            f"file name {name!r} is not allowed: use up to {MAX_FILE_DEPTH} '/'-separated parts "
            "of letters, digits, '.', '_' and '-' (at most 128 each)"
        )
    if name == "main.py":
        raise BadRequest("a file may not be named main.py: that is where the code goes")
    return name


def _file(entry: Any) -> tuple[dict[str, str], int]:
    if not isinstance(entry, dict):
        raise BadRequest("each file must be an object {\"name\", \"content\"}")
    unknown = set(entry) - FILE_FIELDS
    if unknown:
        raise BadRequest(f"unknown file field(s): {', '.join(sorted(unknown))}")
    name = check_file_name(entry.get("name"))
    content, encoding = entry.get("content"), entry.get("encoding", "utf8")
    if not isinstance(content, str):
        raise BadRequest(f"file {name!r} needs a string 'content'")
    if encoding == "utf8":
        size = len(content.encode())
    elif encoding == "base64":
        try:
            size = len(base64.b64decode(content, validate=True))
        except (binascii.Error, ValueError):
            raise BadRequest(f"file {name!r} is not valid base64") from None
    else:
        raise BadRequest(f"file {name!r}: unknown encoding {encoding!r} (use utf8 or base64)")
    return {"name": name, "content": content, "encoding": encoding}, size


def _files(raw: Any, limits: ExecuteConfig) -> list[dict[str, str]]:
    if not isinstance(raw, list):
        raise BadRequest("files must be a list of {\"name\", \"content\"} objects")
    if len(raw) > limits.max_files:
        raise BadRequest(f"{len(raw)} files given; at most {limits.max_files} are allowed")
    files, total = [], 0
    for entry in raw:
        checked, size = _file(entry)
        files.append(checked)
        total += size
    if total > limits.max_files_bytes:
        raise BadRequest(f"the files hold {total} bytes; at most {limits.max_files_bytes} are allowed")
    if len({f["name"] for f in files}) != len(files):
        raise BadRequest("two files have the same name")
    return files


def _args(raw: Any, limits: ExecuteConfig) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        raise BadRequest("args must be a list of strings")
    if len(raw) > limits.max_args:
        raise BadRequest(f"{len(raw)} args given; at most {limits.max_args} are allowed")
    for arg in raw:
        if "\0" in arg:
            raise BadRequest("an argument may not contain a NUL character")
        _size_check("an argument", arg, limits.max_arg_bytes)
    return list(raw)


def _timeout_s(raw: Any, limits: ExecuteConfig) -> float:
    if raw is None:
        return limits.default_timeout_s
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) or raw <= 0:
        raise BadRequest(f"timeout_s must be a positive number of seconds, not {raw!r}")
    return min(float(raw), limits.max_timeout_s)


def _memory_mb(raw: Any, limits: ExecuteConfig) -> int:
    if raw is None:
        return limits.default_memory_mb
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise BadRequest(f"memory_mb must be a whole number of megabytes, not {raw!r}")
    if raw < MIN_MEMORY_MB:
        raise BadRequest(f"memory_mb must be at least {MIN_MEMORY_MB}, not {raw}")
    return min(raw, limits.max_memory_mb)


def _none_as_empty(raw: Any) -> Any:
    # null means absent; another falsy value (0, "", {}) is a wrong type, not an empty list.
    return [] if raw is None else raw


def parse_request(payload: Any, limits: ExecuteConfig) -> ExecuteRequest:
    """Validate a decoded /execute body; raises BadRequest with a message for the caller."""
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object")
    unknown = set(payload) - FIELDS
    if unknown:
        known = ", ".join(sorted(FIELDS))
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}; known: {known}")
    language = payload.get("language", "python")
    if not isinstance(language, str) or language not in LANGUAGES:
        raise BadRequest(f"unknown language {language!r}: only python is supported")
    code = payload.get("code")
    if code is None:
        raise BadRequest("code is required: the Python program to run")
    if not isinstance(code, str):
        raise BadRequest("code must be a string")
    _size_check("code", code, limits.max_code_bytes)
    stdin = payload.get("stdin")
    if stdin is not None and not isinstance(stdin, str):
        raise BadRequest("stdin must be a string")
    _size_check("stdin", stdin or "", limits.max_stdin_bytes)
    return ExecuteRequest(
        code=code, stdin=stdin or "",
        args=_args(_none_as_empty(payload.get("args")), limits),
        files=_files(_none_as_empty(payload.get("files")), limits),
        timeout_s=_timeout_s(payload.get("timeout_s"), limits),
        memory_mb=_memory_mb(payload.get("memory_mb"), limits),
    )


def shape_result(meta: dict[str, Any], body: bytes) -> dict[str, Any]:
    """The public answer from the runtime's: stdout and stderr as text, split where it says."""
    split = int(meta.get("stdout_bytes") or 0)
    result = {key: meta.get(key) for key in RESULT_FIELDS}
    result["stdout"] = body[:split].decode(errors="replace")
    result["stderr"] = body[split:].decode(errors="replace")
    return result


def _check_answer(meta: dict[str, Any]) -> None:
    outcome = meta.get("outcome")
    if outcome == "ok":
        return
    raw = meta.get("error")
    error: dict[str, Any] = raw if isinstance(raw, dict) else {}
    message = str(error.get("message") or meta)
    if outcome == "refused":  # every sandbox tried was busy recycling or could not start
        raise Unavailable(f"no sandbox could take the run: {message}", retry_after_s=1)
    if error.get("code") == "bad_request":
        raise BadRequest(message)
    raise UpstreamBroken(f"the sandbox failed: {message}")


def handler(gw: Gateway) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The route handler, bound to the gateway's shared parts."""

    async def execute(request: web.Request) -> web.Response:
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None
        run = parse_request(payload, gw.config.execute)
        if SANDBOX not in gw.routes.functions:
            if not gw.routes.ready.is_set():
                raise Unavailable("the routing table is not loaded yet", retry_after_s=1)
            raise Unavailable("this Hearth runs no sandbox (HEARTH_SANDBOX_MAX_SCALE is 0)")
        request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        meta = {"op": "execute", "id": request_id}
        token = logs.request_id.set(request_id)  # lines logged meanwhile name the run
        try:
            result = await gw.dispatcher.invoke(SANDBOX, meta, run.body(gw.config.execute.output_limit_bytes))
            _check_answer(result.meta)
            shaped = shape_result(result.meta, result.body)
            metrics.EXECUTIONS.labels(str(shaped.get("status", "unknown"))).inc()
            if gw.access.enabled():
                gw.access.write("execute", {"status": shaped.get("status"), "container": result.container.key,
                                            "duration_ms": shaped.get("duration_ms")})
        finally:
            logs.request_id.reset(token)
        resp = web.Response(body=orjson.dumps(shaped), content_type="application/json")
        resp.headers["X-Request-Id"] = request_id
        resp.headers["X-Hearth-Container"] = result.container.key
        resp.headers["X-Hearth-Start"] = str(result.meta.get("start", "warm"))
        return resp

    return execute
