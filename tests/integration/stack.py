"""A real Hearth for tests: both processes as subprocesses, on a real Docker engine."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def end_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int:
    """Signal a process this harness started, then SIGKILL it if it outstays ``timeout_s``."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def engine_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pool_containers(pool_id: str, all_states: bool = True) -> list[str]:
    args = ["docker", "ps", "-q", "--no-trunc", "--filter", f"label=hearth.pool={pool_id}"]
    if all_states:
        args.insert(2, "-a")
    out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True).stdout
    return out.split()


def remove_pool(pool_id: str) -> None:
    ids = pool_containers(pool_id)
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=60)


class Stack:
    """Pool manager and gateway processes with their own data dir, ports and pool id."""

    def __init__(self, tmp: Path, **env: str) -> None:
        self.tmp = tmp
        self.pool_id = "t" + secrets.token_hex(4)
        self.token = "test-" + secrets.token_hex(8)
        self.port = free_port()
        self.control_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "HEARTH_DATA_DIR": str(tmp / "data"),
            "HEARTH_ADMIN_TOKEN": self.token,
            "HEARTH_GATEWAY_PORT": str(self.port),
            "HEARTH_CONTROL_PORT": str(self.control_port),
            "HEARTH_POOL_ID": self.pool_id,
            "HEARTH_PREWARM": "2",
            "HEARTH_HEALTH_INTERVAL_S": "0.5",
            "HEARTH_HEALTH_TIMEOUT_S": "1.0",
            "HEARTH_BREAKER_OPEN_S": "1.0",
            "HEARTH_SHUTDOWN_TIMEOUT_S": "5",
            # No warm /execute sandbox unless a test asks: tests count containers.
            "HEARTH_SANDBOX_MIN_SCALE": "0",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- processes -----------------------------------------------------------

    def start(self, which: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{which}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", which], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs[which] = proc
        return proc

    def up(self) -> Stack:
        self.start("pool_manager")
        self.wait_http(f"http://127.0.0.1:{self.control_port}/v1/healthz", "pool_manager")
        self.start("gateway")
        self.wait_http(f"{self.url}/readyz", "gateway")
        return self

    def wait_http(self, url: str, which: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self.procs[which]
            if proc.poll() is not None:
                raise RuntimeError(f"{which} exited with {proc.returncode}:\n{self.log(which)}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{which} not ready at {url}:\n{self.log(which)}")

    def log(self, which: str) -> str:
        path = self.tmp / f"{which}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self, which: str, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int | None:
        proc = self.procs.pop(which, None)
        return end_process(proc, sig, timeout_s) if proc else None

    def down(self) -> None:
        self.stop("gateway")
        self.stop("pool_manager")
        remove_pool(self.pool_id)

    # -- API helpers (blocking; tests wrap them or use aiohttp) ----------------

    def request(
        self, method: str, path: str, body: Any = None, admin: bool = False, timeout_s: float = 60
    ) -> tuple[int, dict[str, str], bytes]:
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if admin:
            req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def deploy(self, name: str, source: str, **settings: Any) -> dict[str, Any]:
        status, _, body = self.request(
            "PUT", f"/system/functions/{name}", {"source": source, **settings}, admin=True
        )
        assert status in (200, 201), (status, body)
        return json.loads(body)

    def function(self, name: str) -> dict[str, Any]:
        status, _, body = self.request("GET", f"/system/functions/{name}", admin=True)
        assert status == 200, (status, body)
        return json.loads(body)

    def wait_ready(self, name: str, count: int, timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = self.function(name)
            if info["containers"]["ready"] >= count:
                return info
            time.sleep(0.1)
        raise AssertionError(f"{name} did not reach {count} ready containers: {info}")
