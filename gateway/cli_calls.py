"""`hearth invoke --async` and `hearth calls`: async calls from the command line."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

from gateway.cli_config import CliError, Settings
from gateway.cli_http import Response, call_json, request

STATES = ("queued", "running", "succeeded", "failed")


def add_async_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--async", dest="async_", action="store_true",
        help="queue the call (POST /async-function/NAME) and print its id",
    )
    parser.add_argument("--callback", metavar="URL", help="with --async: POST the result to this URL")


def run_async_invoke(
    settings: Settings, name: str, path: str, body: bytes | None, headers: dict[str, str],
    args: argparse.Namespace,
) -> int:
    """Queue one call; prints the call id on stdout (so scripts can capture it)."""
    if not args.async_:
        raise CliError("--callback needs --async", 2)
    if args.method is not None and args.method.upper() != "POST":
        raise CliError("--async calls are always POST", 2)
    if args.callback:
        headers["X-Callback-Url"] = args.callback
    url = f"{settings.gateway_url}/async-function/{urllib.parse.quote(name, safe='')}{path}"
    response = request(url, "POST", body=body or b"", headers=headers)
    if response.status != 202:
        print(f"hearth: {response.describe_error()}", file=sys.stderr)
        return 1
    found = {k.lower(): v for k, v in response.headers}
    print(found.get("x-call-id") or _json(response).get("id"))
    return 0


# --- calls ------------------------------------------------------------------


def add_calls_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", nargs="?", help="show one call, with its result")
    parser.add_argument("--state", choices=STATES, help="only calls in this state (failed: the dead letters)")
    parser.add_argument("--function", help="only calls of this function")
    parser.add_argument("--limit", type=int, default=50, help="at most this many, newest first (default 50)")
    parser.add_argument("--json", action="store_true", help="print the gateway's JSON as is")


def run_calls(args: argparse.Namespace, settings: Settings) -> int:
    base = f"{settings.gateway_url}/system/calls"
    if args.id:
        url = f"{base}/{urllib.parse.quote(args.id, safe='')}"
    else:
        query = {"limit": str(args.limit), "state": args.state or "", "function": args.function or ""}
        url = f"{base}?{urllib.parse.urlencode({k: v for k, v in query.items() if v})}"
    response = call_json(url, "GET", token=settings.admin_token())
    if not response.ok:
        print(f"hearth: {response.describe_error()}", file=sys.stderr)
        return 1
    if args.json or args.id:
        print(json.dumps(_json(response), indent=None if args.json else 2))
        return 0
    print(format_calls(_json(response).get("calls") or []))
    return 0


def _json(response: Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise CliError("the gateway answered something that is not JSON") from None


def _when(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return datetime.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def _callback(call: dict[str, Any]) -> str:
    cb = call.get("callback")
    if not isinstance(cb, dict):
        return "-"
    return f"{cb.get('state')} ({cb.get('attempts')})"


_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("ID", lambda c: c.get("id")),
    ("FUNCTION", lambda c: c.get("function")),
    ("STATE", lambda c: c.get("state")),
    ("STATUS", lambda c: c.get("status")),
    ("ATTEMPTS", lambda c: c.get("attempts")),
    ("CALLBACK", _callback),
    ("CREATED", lambda c: _when(c.get("created_at"))),
    ("ERROR", lambda c: (c.get("error") or "")[:60] or None),
]


def format_calls(calls: Sequence[Any]) -> str:
    rows = [[title for title, _ in _COLUMNS]]
    for call in calls:
        info = call if isinstance(call, dict) else {}
        rows.append(["-" if (v := get(info)) is None else str(v) for _, get in _COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)
