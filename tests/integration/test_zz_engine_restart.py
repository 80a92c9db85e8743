"""The Docker engine restarts under a running Hearth, which rebuilds its pools.

Named to run last: restarting the engine stops every container on it,
including those of the session's shared stack.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.stack import REPO, Stack, pool_containers

pytestmark = pytest.mark.docker


def dockerd_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_engine_restart_then_hearth_rebuilds_and_serves(engine: None, tmp_path: Path) -> None:
    if os.geteuid() != 0 or not dockerd_pids():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI runs as root with a dockerd started by scripts/engine.sh")
        pytest.skip("needs root and a dockerd this machine started (scripts/engine.sh)")
    s = Stack(tmp_path)
    try:
        s.up()
        s.deploy("phoenix", "def handle(event, context):\n    return 'risen'\n", min_scale=1)
        s.wait_ready("phoenix", 1)
        for pid in dockerd_pids():
            os.kill(pid, 15)
        deadline = time.monotonic() + 60
        while dockerd_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        subprocess.run(["bash", str(REPO / "scripts" / "engine.sh")], check=True, timeout=120)
        # The pool manager reconnects, drops the stopped containers, starts new ones.
        deadline = time.monotonic() + 60
        status = 0
        while time.monotonic() < deadline:
            status, _, body = s.request("GET", "/function/phoenix", timeout_s=10)
            if status == 200:
                break
            time.sleep(0.5)
        assert (status, body) == (200, b"risen"), s.log("pool_manager")
        assert s.procs["pool_manager"].poll() is None and s.procs["gateway"].poll() is None
        # The pools are whole again: the prewarmed generics are back, and the
        # containers the restart stopped are gone rather than left behind.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rebuilt = generic_ready(s) == 2
            running = set(pool_containers(s.pool_id, all_states=False))
            if rebuilt and set(pool_containers(s.pool_id)) == running:
                break
            time.sleep(0.5)
        assert generic_ready(s) == 2, s.log("pool_manager")
        assert set(pool_containers(s.pool_id)) == set(pool_containers(s.pool_id, all_states=False))
    finally:
        s.down()


def generic_ready(s: Stack) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{s.control_port}/v1/status",
                                 headers={"Authorization": f"Bearer {s.token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(json.loads(resp.read())["generic"]["ready"])
