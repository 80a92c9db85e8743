"""`hearth up` runs both real processes; the CLI deploys, invokes, lists and removes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.stack import REPO, free_port, pool_containers, remove_pool

pytestmark = pytest.mark.docker


def hearth(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )


def test_up_deploy_invoke_ls_rm_and_ctrl_c(engine: None, tmp_path: Path) -> None:
    port, control_port = free_port(), free_port()
    pool_id = f"up{os.getpid()}"
    env = {
        **os.environ,
        "HEARTH_DATA_DIR": str(tmp_path / "data"),
        "HEARTH_GATEWAY_PORT": str(port),
        "HEARTH_CONTROL_PORT": str(control_port),
        "HEARTH_POOL_ID": pool_id,
        "HEARTH_PREWARM": "1",
    }
    env.pop("HEARTH_ADMIN_TOKEN", None)  # `up` makes one and stores it
    up = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "up", "--remove-on-exit"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while hearth(env, "ls").returncode != 0:
            assert up.poll() is None, up.stdout.read() if up.stdout else ""
            assert time.monotonic() < deadline, "hearth up did not become ready"
            time.sleep(0.2)
        token_file = tmp_path / "data" / "admin-token"
        assert token_file.stat().st_mode & 0o777 == 0o600

        deployed = hearth(env, "deploy", "hello", str(REPO / "examples" / "hello.py"))
        assert deployed.returncode == 0, deployed.stderr
        invoked = hearth(env, "invoke", "hello", "--data", '{"name": "tester"}')
        assert invoked.returncode == 0, invoked.stderr
        assert '"Hello, tester!"' in invoked.stdout
        listed = hearth(env, "ls")
        assert "hello" in listed.stdout and "main.handle" in listed.stdout
        assert hearth(env, "rm", "hello").returncode == 0
        missing = hearth(env, "invoke", "hello")
        assert missing.returncode == 1 and "function_not_found" in missing.stderr

        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
        assert pool_containers(pool_id) == []  # --remove-on-exit
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)
        remove_pool(pool_id)
