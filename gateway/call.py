"""An async call (or webhook delivery) and its states, as the call store keeps it.

A call is written, and committed, before its 202 is sent. Its life:
``queued`` -> ``running`` (a worker took it; ``attempts`` counts these) ->
``succeeded`` or ``failed``. A callback, when asked for, has its own small
life beside it: ``pending`` -> ``sending`` -> ``delivered`` or, after the
last retry, ``failed``, which also marks the call ``failed`` (dead letter).
"""

from __future__ import annotations

import base64
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import orjson

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED)
CB_PENDING, CB_SENDING, CB_DELIVERED, CB_FAILED = "pending", "sending", "delivered", "failed"


@dataclass(slots=True)
class Request:
    """What a caller asked for: replayed to the function as is."""

    function: str
    method: str = "POST"
    path: str = "/"
    query: str = ""
    headers: list[list[str]] = field(default_factory=list)
    body: bytes = b""
    source: str = "async"  # or "hook"
    callback_url: str | None = None
    dedup_key: str | None = None


@dataclass(slots=True)
class Outcome:
    """What running a call produced: the function's answer or Hearth's error."""

    status: int
    headers: list[list[str]]
    body: bytes
    error: str | None = None  # set when Hearth, not the function, produced the outcome

    @property
    def state(self) -> str:
        # A 5xx is the function failing; any error of Hearth's (even a 404
        # for a function removed meanwhile) means the call did not run.
        return FAILED if self.status >= 500 or self.error is not None else SUCCEEDED


@dataclass(slots=True)
class Call:
    """A stored call; request and result fields are absent in listings."""

    id: str
    function: str
    state: str
    attempts: int = 0
    source: str = "async"
    method: str = "POST"
    path: str = "/"
    query: str = ""
    headers: list[list[str]] = field(default_factory=list)
    body: bytes = b""
    deferrals: int = 0
    error: str | None = None
    status: int | None = None
    result_headers: list[list[str]] = field(default_factory=list)
    result_body: bytes | None = None
    callback_url: str | None = None
    callback_state: str | None = None
    callback_attempts: int = 0
    callback_next_at: float | None = None
    callback_error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Call:
        data = {k: row[k] for k in row.keys() if k in cls.__dataclass_fields__}
        for key in ("headers", "result_headers"):
            if data.get(key) is not None:
                data[key] = orjson.loads(data[key])
            else:
                data.pop(key, None)
        return cls(**data)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id, "function": self.function, "source": self.source, "state": self.state,
            "attempts": self.attempts, "status": self.status, "error": self.error,
            "created_at": self.created_at, "updated_at": self.updated_at, "finished_at": self.finished_at,
            "callback": None if not self.callback_url else {
                "url": self.callback_url, "state": self.callback_state,
                "attempts": self.callback_attempts, "next_at": self.callback_next_at,
                "last_error": self.callback_error,
            },
        }

    def describe(self) -> dict[str, Any]:
        """The summary plus the result, once there is one."""
        data = self.summary()
        if self.status is not None and self.result_body is not None:
            data["result"] = {
                "status": self.status, "headers": self.result_headers, **encode_body(self.result_body)
            }
        return data


def encode_body(body: bytes) -> dict[str, str]:
    try:
        return {"body": body.decode("utf-8"), "body_encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"body": base64.b64encode(body).decode(), "body_encoding": "base64"}
