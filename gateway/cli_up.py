"""`hearth up`: run the pool manager and the gateway as child processes, in the foreground.

Each child gets its own process group, so a Ctrl-C in the terminal reaches
only us; we then stop the gateway first (it drains and stops routing) and
the pool manager second (it still owns the containers the gateway used).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

from gateway.cli_config import (
    CliError,
    Settings,
    data_dir,
    ensure_data_dir,
    load_or_create_token,
    token_path,
)
from gateway.cli_http import GatewayUnreachable, request

READY_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.2
PROBE_TIMEOUT_S = 2.0
# The pool manager may be removing containers (--remove-on-exit): give it longer.
STOP_TIMEOUT_S = {"gateway": 30.0, "pool manager": 60.0}
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class Child:
    """A process we started; only these are ever signalled, by their Popen."""

    name: str
    process: subprocess.Popen[bytes]


class StopSignals:
    """Counts SIGINT/SIGTERM/SIGHUP; the loops act on the count between polls."""

    def __init__(self) -> None:
        self.count = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1

    def __enter__(self) -> StopSignals:
        for sig in _STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def child_environ(environ: Mapping[str, str], data: Path, token: str, remove_on_exit: bool) -> dict[str, str]:
    env = dict(environ)
    env["HEARTH_DATA_DIR"] = str(data)
    env["HEARTH_ADMIN_TOKEN"] = token
    if remove_on_exit:
        env["HEARTH_REMOVE_ON_EXIT"] = "true"
    return env


def resolve_up_token(environ: Mapping[str, str], override: str | None) -> tuple[str, str]:
    """(token, where it came from); creates the token file on first use."""
    if override:
        return override, "--token"
    if environ.get("HEARTH_ADMIN_TOKEN"):
        return environ["HEARTH_ADMIN_TOKEN"], "HEARTH_ADMIN_TOKEN"
    path = token_path(environ)
    return load_or_create_token(path), str(path)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def _http_status(url: str) -> int | None:
    try:
        return request(url, "GET", timeout_s=PROBE_TIMEOUT_S).status
    except GatewayUnreachable:
        return None


def _first_exited(children: Sequence[Child]) -> Child | None:
    return next((c for c in children if c.process.poll() is not None), None)


def wait_ready(
    gateway_url: str,
    children: Sequence[Child],
    signals: StopSignals,
    timeout_s: float = READY_TIMEOUT_S,
) -> str | None:
    """None once /readyz says 200 (or a stop signal came); otherwise what went wrong."""
    deadline = time.monotonic() + timeout_s
    while not signals.count:
        dead = _first_exited(children)
        if dead is not None:
            return (
                f"the {dead.name} exited before Hearth was ready ({describe_exit(dead.process.returncode)})"
            )
        if _http_status(f"{gateway_url}/readyz") == 200:
            return None
        if time.monotonic() >= deadline:
            return f"the gateway at {gateway_url} was not ready within {timeout_s:g} s"
        time.sleep(POLL_INTERVAL_S)
    return None


def watch(children: Sequence[Child], signals: StopSignals) -> Child | None:
    """Block until a stop signal (None) or until a child exits on its own (that child)."""
    while not signals.count:
        dead = _first_exited(children)
        if dead is not None:
            return dead
        time.sleep(POLL_INTERVAL_S)
    return None


def stop(child: Child, timeout_s: float, impatient: Callable[[], bool]) -> None:
    """SIGTERM, wait up to timeout_s (or until the user insists), then SIGKILL."""
    process = child.process
    if process.poll() is not None:
        return
    print(f"hearth: stopping the {child.name} (pid {process.pid})", file=sys.stderr)
    process.terminate()  # Popen skips the signal if it has already reaped the pid
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        if time.monotonic() >= deadline or impatient():
            print(f"hearth: killing the {child.name} (pid {process.pid})", file=sys.stderr)
            process.kill()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # stuck in the kernel; nothing more we can do
                print(f"hearth: the {child.name} did not die", file=sys.stderr)
            return
        time.sleep(POLL_INTERVAL_S / 2)


def stop_all(children: Sequence[Child], signals: StopSignals) -> None:
    # A further Ctrl-C while stopping means "now": kill whatever is left.
    patience = signals.count
    for child in reversed(children):
        stop(child, STOP_TIMEOUT_S.get(child.name, 30.0), lambda: signals.count > patience)


def start(name: str, module: str, env: Mapping[str, str]) -> Child:
    process = subprocess.Popen(
        [sys.executable, "-m", module],
        env=env,
        stdin=subprocess.DEVNULL,
        process_group=0,  # see the module docstring: we decide the stop order
    )
    return Child(name, process)


def _supervise(
    children: list[Child], env: Mapping[str, str], url: str, signals: StopSignals, token_from: str
) -> int:
    children.append(start("pool manager", "pool_manager", env))
    children.append(start("gateway", "gateway", env))
    problem = wait_ready(url, children, signals)
    if signals.count:
        return 0
    if problem is not None:
        print(f"hearth: {problem}; stopping", file=sys.stderr)
        return 1
    print(f"Hearth is up: gateway at {url}", flush=True)
    print(f"  admin token: {token_from}", flush=True)
    print(f"  data: {env['HEARTH_DATA_DIR']}", flush=True)
    print("  Ctrl-C stops both (press again to kill them at once)", flush=True)
    dead = watch(children, signals)
    if dead is None:
        return 0
    code = describe_exit(dead.process.returncode)
    print(f"hearth: the {dead.name} exited ({code}); stopping", file=sys.stderr)
    return 1


def run_up(settings: Settings, token_override: str | None, *, remove_on_exit: bool) -> int:
    url = settings.gateway_url
    # An old gateway still answering would make the new one look ready.
    if _http_status(f"{url}/healthz") is not None:
        raise CliError(f"something already answers at {url}; is Hearth already running?")
    data = data_dir(settings.environ).resolve()
    environ = {**settings.environ, "HEARTH_DATA_DIR": str(data)}
    try:
        ensure_data_dir(data)
        token, token_from = resolve_up_token(environ, token_override)
    except OSError as err:
        raise CliError(f"cannot prepare the data directory {data}: {err}") from None
    env = child_environ(environ, data, token, remove_on_exit)
    children: list[Child] = []
    with StopSignals() as signals:
        try:
            return _supervise(children, env, url, signals, token_from)
        finally:
            stop_all(children, signals)
