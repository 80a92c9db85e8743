"""One JSON object per line, for both processes, with the request id when there is one."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import time
from typing import IO, Any

import orjson

# Set by the gateway for the duration of a request, so every line logged
# while serving it can be joined with the container's lines for it.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id"?, ...extra}`` per record."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "process": self.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup(process: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(process))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.Formatter.converter = time.gmtime
    # The JSON lines carry none of the caller's file, line, thread or process:
    # skip finding them per record (a good part of a log call's cost, and the
    # gateway logs a line per invocation).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None


class AccessLog:
    """The gateway's line per request, in the same JSON shape, at most one write per loop turn.

    Through ``logging`` each line cost a record, a format and a write call:
    about a tenth of the gateway's CPU under load. Lines logged in one turn of
    the event loop go out together at the end of it, so none waits longer
    than the requests being answered in that turn.
    """

    def __init__(self, process: str, logger: str, stream: IO[bytes] | None = None, on: bool = True) -> None:
        self.process, self.logger = process, logger
        self.stream = stream
        self.on = on  # HEARTH_ACCESS_LOG
        self.lines: list[bytes] = []

    def enabled(self) -> bool:
        return self.on and logging.getLogger(self.logger).isEnabledFor(logging.INFO)

    def write(self, msg: str, fields: dict[str, Any]) -> None:
        entry: dict[str, Any] = {"ts": round(time.time(), 3), "level": "info", "process": self.process,
                                 "logger": self.logger, "msg": msg}
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        entry.update(fields)
        if not self.lines:
            asyncio.get_running_loop().call_soon(self.flush)
        self.lines.append(orjson.dumps(entry, default=str))

    def flush(self) -> None:
        if not self.lines:
            return
        data = b"\n".join(self.lines) + b"\n"
        self.lines.clear()
        stream = self.stream or sys.stderr.buffer
        try:
            sys.stderr.flush()  # what logging wrote first goes out first
            stream.write(data)
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not fail requests
            pass
