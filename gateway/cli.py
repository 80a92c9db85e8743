"""The `hearth` command: start Hearth, deploy, invoke, list and remove functions.

Every command but `up` talks only to the gateway's public HTTP API. Commands
live in COMMANDS (name -> how to parse, how to run), so new ones slot in
without touching the dispatch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.cli_calls import add_async_arguments, add_calls_arguments, run_async_invoke, run_calls
from gateway.cli_config import CliError, Settings, default_data_dir, gateway_url
from gateway.cli_deploy import add_deploy_arguments, deploy_payload
from gateway.cli_exec import add_exec_arguments, run_exec
from gateway.cli_http import GatewayUnreachable, Response, call_json, request
from gateway.cli_logs import add_logs_arguments, run_logs

__all__ = ["COMMANDS", "default_data_dir", "main"]


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, its arguments, and what it does."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Settings], int]


def _write_bytes(data: bytes) -> None:
    # Flush text first so printed lines and raw bytes come out in order.
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _fail(response: Response) -> int:
    print(f"hearth: {response.describe_error()}", file=sys.stderr)
    return 1


def _function_url(settings: Settings, name: str) -> str:
    return f"{settings.gateway_url}/system/functions/{urllib.parse.quote(name, safe='')}"


# --- up ---------------------------------------------------------------------


def _add_up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--remove-on-exit",
        action="store_true",
        help="remove the function containers when the pool manager stops",
    )


def _run_up(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.cli_up import run_up  # only `up` needs subprocess and signals

    return run_up(settings, args.token, remove_on_exit=args.remove_on_exit)


# --- deploy -----------------------------------------------------------------


def _run_deploy(args: argparse.Namespace, settings: Settings) -> int:
    payload = deploy_payload(args)
    token = settings.admin_token()
    response = call_json(_function_url(settings, args.name), "PUT", payload, token=token)
    if not response.ok:
        return _fail(response)
    version = _version_of(response)
    print(f"deployed {args.name}" + (f" (version {version})" if version is not None else ""))
    return 0


def _version_of(response: Response) -> Any:
    try:
        answer = response.json()
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    nested = answer.get("function")
    return answer.get("version", nested.get("version") if isinstance(nested, dict) else None)


# --- invoke -----------------------------------------------------------------


def _add_invoke_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("-d", "--data", help="request body: a string, @FILE to read a file, - to read stdin")
    parser.add_argument("-X", "--method", help="HTTP method (default POST with data, else GET)")
    parser.add_argument("--path", default="", help="sub-path after /function/NAME, e.g. /a?b=1")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="'KEY: VALUE'", dest="headers")
    parser.add_argument("-i", "--include", action="store_true", help="print the status line and headers")
    add_async_arguments(parser)


def _read_data(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data == "-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        try:
            with open(data[1:], "rb") as file:
                return file.read()
        except OSError as err:
            raise CliError(f"cannot read {data[1:]}: {err.strerror}", 2) from None
    return data.encode()


def _parse_headers(raw: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in raw:
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            raise CliError(f"a header must look like 'Key: Value', got {item!r}", 2)
        headers[key.strip()] = value.strip()
    return headers


def _guess_content_type(body: bytes) -> str:
    # urllib would otherwise label every body as a form post.
    try:
        json.loads(body)
    except ValueError:
        return "application/octet-stream"
    return "application/json"


def _run_invoke(args: argparse.Namespace, settings: Settings) -> int:
    body = _read_data(args.data)
    headers = _parse_headers(args.headers)
    if body is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = _guess_content_type(body)
    method = (args.method or ("POST" if body is not None else "GET")).upper()
    path = args.path if not args.path or args.path.startswith("/") else "/" + args.path
    if args.async_ or args.callback:
        quoted = urllib.parse.quote(path, safe=_PATH_SAFE)
        return run_async_invoke(settings, args.name, quoted, body, headers, args)
    name = urllib.parse.quote(args.name, safe="")
    url = f"{settings.gateway_url}/function/{name}{urllib.parse.quote(path, safe=_PATH_SAFE)}"
    # Deliberately no admin token: the function would see it in its headers.
    response = request(url, method, body=body, headers=headers)
    if args.include:
        print(f"HTTP/1.1 {response.status} {response.reason}")
        for key, value in response.headers:
            print(f"{key}: {value}")
        print()
    _write_bytes(_terminal_friendly(response.body))
    if response.ok:
        return 0
    error = response.error()
    if error is not None:
        # The message is already in the body on stdout; repeating it doubles a long traceback.
        print(f"hearth: {response.status} {error[0]}", file=sys.stderr)
    return 1


def _terminal_friendly(body: bytes) -> bytes:
    # On a terminal the prompt would start on the body's last line; a pipe
    # gets the function's bytes exactly.
    if body and not body.endswith(b"\n") and sys.stdout.isatty():
        return body + b"\n"
    return body


# Keeps what the user already encoded (%xx) and the query string intact.
_PATH_SAFE = "/?&=%:@+,;!$'()*~"


# --- ls / rm ----------------------------------------------------------------


def _add_ls_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the gateway's JSON as is")


LOAD_ERROR_WIDTH = 60


def _reason(info: dict[str, Any]) -> Any:
    # Code that cannot load never gets a container; without this the table
    # would show such a function as merely scaled to zero.
    error = info.get("load_error")
    if error:
        first = (str(error).strip().splitlines() or [""])[0]
        if len(first) > LOAD_ERROR_WIDTH:
            first = first[: LOAD_ERROR_WIDTH - 3] + "..."
        return f"load failed: {first}"
    return (info.get("scaling") or {}).get("reason")


_LS_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("NAME", lambda f: f.get("name")),
    ("HANDLER", lambda f: f.get("handler")),
    ("CONCURRENCY", lambda f: f.get("concurrency")),
    ("MIN", lambda f: f.get("min_scale")),
    ("MAX", lambda f: f.get("max_scale")),
    ("READY", lambda f: (f.get("containers") or {}).get("ready")),
    ("STARTING", lambda f: (f.get("containers") or {}).get("starting")),
    ("DRAINING", lambda f: (f.get("containers") or {}).get("draining")),
    ("DESIRED", lambda f: (f.get("scaling") or {}).get("desired")),
    ("REASON", _reason),
]


def format_table(functions: Sequence[Any]) -> str:
    rows = [[title for title, _ in _LS_COLUMNS]]
    for function in functions:
        info = function if isinstance(function, dict) else {}
        rows.append([_cell(get, info) for _, get in _LS_COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(_LS_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _cell(get: Callable[[dict[str, Any]], Any], info: dict[str, Any]) -> str:
    try:
        value = get(info)
    except AttributeError:  # e.g. "containers" is not an object
        value = None
    return "-" if value is None else str(value)


def _run_ls(args: argparse.Namespace, settings: Settings) -> int:
    url = f"{settings.gateway_url}/system/functions"
    response = call_json(url, "GET", token=settings.admin_token())
    if not response.ok:
        return _fail(response)
    if args.json:
        _write_bytes(response.body if response.body.endswith(b"\n") else response.body + b"\n")
        return 0
    try:
        functions = response.json().get("functions") or []
    except (ValueError, AttributeError):
        raise CliError("the gateway answered something that is not a function list") from None
    print(format_table(functions))
    return 0


def _add_name_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")


def _run_rm(args: argparse.Namespace, settings: Settings) -> int:
    token = settings.admin_token()
    response = call_json(_function_url(settings, args.name), "DELETE", token=token)
    if not response.ok:
        return _fail(response)
    print(f"removed {args.name}")
    return 0


COMMANDS: dict[str, Command] = {
    "up": Command("run the pool manager and the gateway", _add_up_arguments, _run_up),
    "deploy": Command("deploy or update a function", add_deploy_arguments, _run_deploy),
    "invoke": Command("call a function", _add_invoke_arguments, _run_invoke),
    "ls": Command("list functions", _add_ls_arguments, _run_ls),
    "rm": Command("remove a function and its containers", _add_name_argument, _run_rm),
    "logs": Command("show what a function's containers printed", add_logs_arguments, run_logs),
    "exec": Command("run a Python file once in the sandbox", add_exec_arguments, run_exec),
    "calls": Command("show async calls (--state failed: dead letters)", add_calls_arguments, run_calls),
}


# --- entry point ------------------------------------------------------------


def _add_global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--gateway", metavar="URL", default=default, help="gateway base URL")
    parser.add_argument("--token", default=default, help="admin token")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hearth", description=__doc__.splitlines()[0])
    _add_global_options(parser, None)
    # SUPPRESS in the subparsers lets `hearth ls --gateway URL` work without a
    # subcommand's default overwriting a value given before the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, argparse.SUPPRESS)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, parents=[common])
        command.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        settings = Settings(gateway_url(env, args.gateway), env, args.token)
        return COMMANDS[args.command].run(args, settings)
    except CliError as err:
        print(f"hearth: {err}", file=sys.stderr)
        return err.exit_code
    except GatewayUnreachable as err:
        print(_unreachable_message(gateway_url(env, args.gateway), err), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `hearth ls | head`: the reader left; silence the flush at exit too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _unreachable_message(base_url: str, err: GatewayUnreachable) -> str:
    message = f"hearth: the gateway at {base_url} does not answer ({err.reason})."
    if err.refused:
        message += " Is Hearth running? Start it with `hearth up`."
    return message


if __name__ == "__main__":
    sys.exit(main())
