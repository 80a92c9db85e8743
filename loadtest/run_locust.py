"""Headless Locust against a Hearth gateway: deploy, run for a bounded time, write CSV and HTML.

    python -m loadtest.run_locust --users 20 --spawn-rate 10 --run-time 20s --out loadtest/reports
        [--gateway URL] [--token TOKEN] [--start] [--classes SyncUser,ExecuteUser] [--wait-s 0] [--keep]

The gateway is --gateway (else $HEARTH_GATEWAY_URL, else 127.0.0.1:$HEARTH_GATEWAY_PORT)
with the admin token from --token, $HEARTH_ADMIN_TOKEN or $HEARTH_DATA_DIR/admin-token,
as for the ``hearth`` CLI; --start runs a Hearth of its own instead (both
processes, a temporary data dir) and removes it and its containers after.

It deploys the functions the users call, sends one request of each kind so
cold starts and misconfiguration show up before the clock starts, then runs
``python -m locust -f loadtest/locustfile.py --headless`` as a child process
and prints the CSV's lines. This module never imports locust: gevent's
monkey-patching and aiohttp in one process crash (DESIGN.md).

Reports: OUT/hearth_stats.csv (and _failures, _exceptions, _stats_history) and
OUT/hearth.html. The exit status is Locust's: 1 when any request failed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.cli_config import CliError, gateway_url, resolve_token

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
CLASSES = ("SyncUser", "AsyncUser", "HookUser", "ExecuteUser")
CSV_PREFIX = "hearth"
PROBE_TIMEOUT_S = 60.0
# Past --run-time: ramp-down (--stop-timeout), writing reports, interpreter start.
EXTRA_S = 60
# The locustfile's function, read here without importing it (it imports locust).
ECHO_SOURCE = re.search(r'ECHO_SOURCE = """(.*?)"""', LOCUSTFILE.read_text(), re.S)[1]  # type: ignore[index]
EXECUTE_PROBE = {"language": "python", "code": "print(6)", "timeout_s": 5}


@dataclass(frozen=True)
class Target:
    """A gateway and what the users need to know about it."""

    url: str
    token: str
    function: str
    hook_function: str
    hook_secret: str

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                admin: bool = False) -> tuple[int, bytes]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if data is not None and "Content-Type" not in req.headers:
            req.add_header("Content-Type", "application/json")
        if admin:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=PROBE_TIMEOUT_S) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def locust_env(self, wait_s: float) -> dict[str, str]:
        return {
            **os.environ,
            "HEARTH_LOCUST_FUNCTION": self.function,
            "HEARTH_LOCUST_HOOK_FUNCTION": self.hook_function,
            "HEARTH_LOCUST_HOOK_SECRET": self.hook_secret,
            "HEARTH_LOCUST_TOKEN": self.token,
            "HEARTH_LOCUST_WAIT_S": str(wait_s),
        }


def run_time_s(spec: str) -> int:
    """Locust's --run-time ("20s", "1m30s", "2h", or bare seconds) in seconds."""
    if spec.isdigit():
        return int(spec)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", spec)
    if not spec or parts is None:
        raise argparse.ArgumentTypeError(f"--run-time must look like 20s, 1m30s or 2h, got {spec!r}")
    hours, minutes, seconds = (int(p or 0) for p in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def deploy(target: Target) -> None:
    settings = {"source": ECHO_SOURCE, "concurrency": 4, "min_scale": 1, "max_scale": 4}
    hook = {"webhook_secret": target.hook_secret}
    for name, extra in ((target.function, {}), (target.hook_function, hook)):
        status, body = target.request("PUT", f"/system/functions/{name}", {**settings, **extra}, admin=True)
        if status not in (200, 201):
            raise CliError(f"deploying {name} failed: {status} {body[:300]!r}")


def probe(target: Target, classes: list[str]) -> None:
    """One request of each kind the run will make; a failure here names what is wrong."""
    hook_body = b'{"probe": true}'
    signed = "sha256=" + hmac.new(target.hook_secret.encode(), hook_body, hashlib.sha256).hexdigest()
    checks = {
        "SyncUser": ("POST", f"/function/{target.function}", {"probe": True}, {}, 200),
        "AsyncUser": ("POST", f"/async-function/{target.function}", {"probe": True}, {}, 202),
        "HookUser": ("POST", f"/hooks/{target.hook_function}", hook_body,
                     {"X-Hub-Signature-256": signed, "Content-Type": "application/json"}, 202),
        "ExecuteUser": ("POST", "/execute", EXECUTE_PROBE, {}, 200),
    }
    for cls in classes:
        method, path, body, headers, expected = checks[cls]
        status, answer = target.request(method, path, body, headers)
        if status != expected:
            raise CliError(f"{cls}: {method} {path} answered {status}, not {expected}: {answer[:300]!r}")


def run_locust(target: Target, args: argparse.Namespace, classes: list[str]) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--host", target.url, "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
        "--run-time", args.run_time, "--stop-timeout", "5", "--exit-code-on-error", "1",
        "--csv", str(args.out / CSV_PREFIX), "--html", str(args.out / f"{CSV_PREFIX}.html"), *classes,
    ]
    timeout_s = run_time_s(args.run_time) + EXTRA_S
    try:
        proc = subprocess.run(cmd, env=target.locust_env(args.wait_s), timeout=timeout_s, check=False)
        return proc.returncode
    except subprocess.TimeoutExpired:
        print(f"run_locust: locust ran past {timeout_s} s and was killed", file=sys.stderr)
        return 1


def print_stats(out: Path) -> None:
    path = out / f"{CSV_PREFIX}_stats.csv"
    if not path.exists():
        return
    print(f"\n{'type':<7}{'name':<28}{'requests':>9}{'failures':>9}{'p50 ms':>8}{'p95 ms':>8}{'req/s':>8}")
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            print(f"{row['Type']:<7}{row['Name']:<28}{row['Request Count']:>9}{row['Failure Count']:>9}"
                  f"{row['50%']:>8}{row['95%']:>8}{float(row['Requests/s']):>8.1f}")
    print(f"\nreports: {path} and {out / (CSV_PREFIX + '.html')}")


@contextmanager
def own_hearth() -> Iterator[tuple[str, str]]:
    """Both processes with a temporary data dir; yields (url, token), removes it all after."""
    from tests.integration.stack import Stack  # the test harness's launcher, as bench.py uses

    with tempfile.TemporaryDirectory(prefix="hearth-locust-") as tmp:
        stack = Stack(Path(tmp), HEARTH_SANDBOX_MIN_SCALE="1")
        try:
            stack.up()
            yield stack.url, stack.token
        finally:
            stack.down()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--spawn-rate", type=float, default=10.0)
    p.add_argument("--run-time", default="20s", help="bounded, as Locust reads it: 20s, 1m30s")
    p.add_argument("--out", type=Path, default=HERE / "reports")
    p.add_argument("--gateway", help="gateway URL (default: as the hearth CLI finds it)")
    p.add_argument("--token", help="admin token (default: $HEARTH_ADMIN_TOKEN or the data dir's)")
    p.add_argument("--start", action="store_true", help="run a Hearth of its own for the test")
    p.add_argument("--classes", default=",".join(CLASSES), help="user classes to run, comma-separated")
    p.add_argument("--wait-s", type=float, default=0.0, help="each user's think time: 0..S seconds")
    p.add_argument("--prefix", default="loadtest", help="names of the deployed functions: PREFIX-echo, -hook")
    p.add_argument("--keep", action="store_true", help="leave the deployed functions in place")
    args = p.parse_args(argv)
    run_time_s(args.run_time)  # refuse an unbounded or malformed run before deploying anything
    return args


def run(args: argparse.Namespace, url: str, token: str) -> int:
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    unknown = set(classes) - set(CLASSES)
    if unknown or not classes:
        raise CliError(f"--classes takes some of {', '.join(CLASSES)}; got {args.classes!r}")
    target = Target(url, token, f"{args.prefix}-echo", f"{args.prefix}-hook", secrets.token_hex(16))
    deploy(target)
    try:
        probe(target, classes)
        status = run_locust(target, args, classes)
        print_stats(args.out)
        return status
    finally:
        if not args.keep:
            for name in (target.function, target.hook_function):
                target.request("DELETE", f"/system/functions/{name}", admin=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.start:
            with own_hearth() as (url, token):
                return run(args, url, token)
        given = resolve_token(os.environ, args.token)
        if not given:
            raise CliError("no admin token: pass --token, set HEARTH_ADMIN_TOKEN, or use --start", 2)
        return run(args, gateway_url(os.environ, args.gateway), given)
    except CliError as exc:
        print(f"run_locust: {exc}", file=sys.stderr)
        return exc.exit_code
    except (urllib.error.URLError, OSError) as exc:
        print(f"run_locust: the gateway did not answer: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
