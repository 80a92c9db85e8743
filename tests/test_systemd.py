"""systemd/: the units pass systemd-analyze; both processes accept the example environment file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import Config as GatewayConfig
from pool_manager.config import Config as PoolConfig

SYSTEMD = Path(__file__).resolve().parents[1] / "systemd"
UNITS = ("hearth-pool-manager.service", "hearth-gateway.service")
# Where the README's install puts the interpreter; verify needs a real one.
INSTALLED_PYTHON = "/opt/hearth/bin/python"
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
MAX_EXPOSURE = 2.5  # systemd-analyze security: 1.7 today; a dropped hardening option shows here


def parse_environment_file(text: str) -> dict[str, str]:
    """What systemd's EnvironmentFile= makes of ``text``, for the plain subset we allow.

    Quotes, backslashes and ``$`` mean different things to systemd, a shell
    and a reader's eye; the example avoids them, and this insists.
    """
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=([^\"'\\$]*)", line)
        assert match, f"line {number} is not a plain KEY=VALUE: {raw!r}"
        env[match[1]] = match[2].strip()
    return env


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` -> values, in order (keys like After= may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


def words(settings: dict[str, list[str]], key: str) -> set[str]:
    return {w for value in settings.get(key, []) for w in value.split()}


@pytest.fixture(scope="module")
def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but systemd-analyze is missing (apt-get install -y systemd)")
        pytest.skip("systemd-analyze is missing (apt-get install -y systemd)")
    return tool


@pytest.fixture
def units(tmp_path: Path) -> list[Path]:
    """The units as written, but starting a Python that exists here (verify checks ExecStart)."""
    out = []
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        assert f"ExecStart={INSTALLED_PYTHON} -m " in text
        (tmp_path / name).write_text(text.replace(INSTALLED_PYTHON, sys.executable))
        out.append(tmp_path / name)
    if not any(Path(d, "docker.service").exists() for d in UNIT_DIRS):
        # Requires=docker.service must resolve; a machine without Docker gets a stand-in.
        (tmp_path / "docker.service").write_text("[Service]\nExecStart=/bin/true\n")
    return out


def test_systemd_analyze_verify_is_clean(analyze: str, units: list[Path]) -> None:
    # --man=no: Documentation= is not checked against installed man pages.
    proc = subprocess.run(
        [analyze, "verify", "--man=no", *map(str, units)], capture_output=True, text=True, timeout=60
    )
    # Unknown keys are only warnings (exit 0), so any output fails too.
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr


@pytest.mark.parametrize("name", UNITS)
def test_hardening_exposure_stays_low(analyze: str, units: list[Path], name: str) -> None:
    proc = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(units[UNITS.index(name)])],
        capture_output=True, text=True, timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    assert float(found[1]) <= MAX_EXPOSURE, proc.stdout


def test_units_order_readiness_and_restart() -> None:
    pool = unit_settings(SYSTEMD / "hearth-pool-manager.service")
    gateway = unit_settings(SYSTEMD / "hearth-gateway.service")
    assert "docker.service" in words(pool, "Unit.After") & words(pool, "Unit.Requires")
    assert "hearth-pool-manager.service" in words(gateway, "Unit.After") & words(gateway, "Unit.Wants")
    for unit in (pool, gateway):
        assert unit["Service.Type"] == ["notify"]  # the processes send READY=1 (hearth/sd_notify.py)
        assert unit["Service.Restart"] == ["on-failure"]
        assert unit["Service.EnvironmentFile"] == ["/etc/hearth/hearth.env"]
        assert unit["Service.StateDirectory"] == ["hearth"]
    assert words(pool, "Service.SupplementaryGroups") == {"docker"}
    assert "docker" not in words(gateway, "Service.SupplementaryGroups")


def test_example_environment_is_accepted_by_both_processes() -> None:
    env = parse_environment_file((SYSTEMD / "hearth.env.example").read_text())
    pool = PoolConfig.from_env(env)
    gateway = GatewayConfig.from_env(env)
    data_dir = Path("/var/lib/hearth")  # the units' StateDirectory=, the only writable path
    assert pool.data_dir == gateway.data_dir == data_dir
    # PrivateTmp=yes: a socket dir under /tmp would be private to the unit,
    # and dockerd could not bind-mount it into containers.
    assert pool.sockets_dir.is_relative_to(data_dir)
    assert gateway.control_url == f"http://127.0.0.1:{pool.control_port}"
    assert gateway.admin_token == pool.admin_token
    gateway_stop_s = float(unit_settings(SYSTEMD / "hearth-gateway.service")["Service.TimeoutStopSec"][0])
    assert gateway.shutdown_timeout_s < gateway_stop_s


def test_environment_file_parser_rejects_what_systemd_would_read_differently() -> None:
    assert parse_environment_file("# c\n; c\n\nA=1\nB=x y \n") == {"A": "1", "B": "x y"}
    for bad in ('A="quoted"', "export A=1", "A=$HOME", "A=a\\", "A = 1"):
        with pytest.raises(AssertionError):
            parse_environment_file(bad)
