"""`hearth exec FILE`: run a Python file once in the sandbox, through POST /execute.

The program's stdout and stderr come out on ours, and its exit code becomes
ours, so `hearth exec` composes in scripts like `python3 FILE` would. A run
killed at its timeout exits 124, as `timeout(1)` does.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from typing import Any

from gateway.cli_config import CliError, Settings
from gateway.cli_http import call_json

TIMEOUT_EXIT = 124
NOTES = {
    "timeout": "the program ran past its timeout and was stopped",
    "memory": "the program ran out of memory",
    "output_limit": "the program printed more than the output limit; the rest was dropped",
}


def add_exec_arguments(parser: argparse.ArgumentParser) -> None:
    # As with `python3 FILE ARGS`: every word after FILE is the program's, so
    # hearth's own options go before FILE.
    parser.add_argument("file", help="the Python file to run (- reads it from stdin)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the program")
    parser.add_argument("--stdin", help="its standard input: a string, @FILE, or - for ours")
    parser.add_argument("-f", "--file", action="append", default=[], dest="files", metavar="[NAME=]PATH",
                        help="an extra file beside the program (repeatable)")
    parser.add_argument("--timeout", type=float, help="seconds before it is stopped (capped by the server)")
    parser.add_argument("--memory", type=int, help="megabytes it may allocate (capped by the server)")
    parser.add_argument("--json", action="store_true", help="print the gateway's JSON answer as is")


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise CliError(f"cannot read {path}: {err.strerror}", 2) from None


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise CliError(f"{what} is not UTF-8 text", 2) from None


def _extra_file(spec: str) -> dict[str, str]:
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = os.path.basename(spec), spec
    data = _read(path)
    try:
        return {"name": name, "content": data.decode()}
    except UnicodeDecodeError:
        return {"name": name, "content": base64.b64encode(data).decode(), "encoding": "base64"}


def _stdin(given: str) -> str:
    if given == "-":
        return _text(_read("-"), "stdin")
    if given.startswith("@"):
        return _text(_read(given[1:]), given[1:])
    return given


def exec_payload(args: argparse.Namespace) -> dict[str, Any]:
    if args.file == "-" and args.stdin == "-":
        raise CliError("the program and its stdin cannot both come from stdin", 2)
    payload: dict[str, Any] = {"language": "python", "code": _text(_read(args.file), args.file)}
    if args.stdin is not None:
        payload["stdin"] = _stdin(args.stdin)
    if args.args:
        payload["args"] = list(args.args)
    if args.files:
        payload["files"] = [_extra_file(spec) for spec in args.files]
    if args.timeout is not None:
        payload["timeout_s"] = args.timeout
    if args.memory is not None:
        payload["memory_mb"] = args.memory
    return payload


def exit_code_of(result: dict[str, Any]) -> int:
    status, code = result.get("status"), result.get("exit_code")
    if status == "ok":
        return 0
    if status == "timeout":
        return TIMEOUT_EXIT
    if isinstance(code, int) and code:
        return code
    signal_name = result.get("signal")
    return 137 if signal_name == "SIGKILL" else 1


def run_exec(args: argparse.Namespace, settings: Settings) -> int:
    # Deliberately no admin token: /execute is public, and the code sees nothing of it anyway.
    response = call_json(f"{settings.gateway_url}/execute", "POST", exec_payload(args))
    if not response.ok:
        print(f"hearth: {response.describe_error()}", file=sys.stderr)
        return 1
    try:
        result = response.json()
    except ValueError:
        raise CliError("the gateway answered something that is not JSON") from None
    if args.json:
        sys.stdout.write(response.body.decode(errors="replace") + "\n")
        return exit_code_of(result)
    sys.stdout.write(result.get("stdout") or "")
    sys.stdout.flush()
    sys.stderr.write(result.get("stderr") or "")
    note = NOTES.get(str(result.get("status")))
    if note:
        print(f"hearth: {note}", file=sys.stderr)
    return exit_code_of(result)
