"""`hearth logs NAME`: what a function's containers printed, through the admin API."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

from gateway.cli_config import Settings
from gateway.cli_http import call_json


def add_logs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("--tail", type=int, default=200, help="lines per container (default 200)")
    parser.add_argument("--json", action="store_true", help="print the gateway's JSON answer as is")


def _timestamp(line: str) -> float:
    # The runtime writes JSON lines with "ts"; anything else sorts first, in order.
    try:
        value = json.loads(line).get("ts", 0.0)
        return float(value) if isinstance(value, int | float) else 0.0
    except (ValueError, AttributeError):
        return 0.0


def merged(answer: dict[str, Any]) -> list[str]:
    """All containers' lines, by time where the lines carry it, each tagged with its container."""
    tagged = [
        (_timestamp(line), n, f"{c.get('id', '?')}  {line}")
        for c in answer.get("containers") or []
        for n, line in enumerate(c.get("lines") or [])
    ]
    return [text for _, _, text in sorted(tagged, key=lambda t: (t[0], t[1]))]


def run_logs(args: argparse.Namespace, settings: Settings) -> int:
    name = urllib.parse.quote(args.name, safe="")
    url = f"{settings.gateway_url}/system/functions/{name}/logs?tail={args.tail}"
    response = call_json(url, "GET", token=settings.admin_token())
    if not response.ok:
        print(f"hearth: {response.describe_error()}", file=sys.stderr)
        return 1
    answer = response.json()
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    lines = merged(answer)
    if not lines:
        print(f"hearth: {args.name} has no container with output (it may be scaled to zero)", file=sys.stderr)
    for line in lines:
        print(line)
    return 0
