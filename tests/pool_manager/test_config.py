"""The pool manager's Config.from_env: defaults, pool id, and one named error per bad setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pool_manager.config import Config, ConfigError, default_budget

TOKEN = "admin-token-123"


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    return {"HEARTH_ADMIN_TOKEN": TOKEN, "HEARTH_DATA_DIR": str(tmp_path)}


def test_defaults(base: dict[str, str], tmp_path: Path) -> None:
    config = Config.from_env(base)
    expected = {
        "data_dir": tmp_path.resolve(),
        "admin_token": TOKEN,
        "control_token": TOKEN,
        "control_host": "127.0.0.1",
        "control_port": 8081,
        "image": "hearth-runtime:latest",
        "prewarm": 2,
        "default_memory_mb": 128,
        "max_memory_mb": 2048,
        "default_timeout_s": 30.0,
        "max_timeout_s": 300.0,
        "cpus": 1.0,
        "pids_limit": 128,
        "tmpfs_mb": 64,
        "health_interval_s": 2.0,
        "health_timeout_s": 2.0,
        "start_timeout_s": 30.0,
        "max_containers": default_budget(128),
        "remove_on_exit": False,
        "routes_poll_s": 25.0,
    }
    assert {k: getattr(config, k) for k in expected} == expected
    assert config.functions_dir == tmp_path.resolve() / "functions"
    assert config.sockets_dir == tmp_path.resolve() / "sockets"


def test_config_is_frozen(base: dict[str, str]) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config.from_env(base).prewarm = 0  # type: ignore[misc]


def test_data_dir_defaults_under_xdg_data_home(tmp_path: Path) -> None:
    config = Config.from_env({"HEARTH_ADMIN_TOKEN": TOKEN, "XDG_DATA_HOME": str(tmp_path)})
    assert config.data_dir == (tmp_path / "hearth").resolve()


@pytest.mark.parametrize("token", [None, "", "short", "1234567"])
def test_missing_or_short_admin_token(tmp_path: Path, token: str | None) -> None:
    environ = {"HEARTH_DATA_DIR": str(tmp_path)}
    if token is not None:
        environ["HEARTH_ADMIN_TOKEN"] = token
    with pytest.raises(ConfigError, match="HEARTH_ADMIN_TOKEN"):
        Config.from_env(environ)


def test_control_token_override(base: dict[str, str]) -> None:
    config = Config.from_env({**base, "HEARTH_CONTROL_TOKEN": "separate-token"})
    assert (config.admin_token, config.control_token) == (TOKEN, "separate-token")


# -- pool id -------------------------------------------------------------------


def test_default_pool_id_is_stable_per_data_dir(tmp_path: Path) -> None:
    a = Config.from_env({"HEARTH_ADMIN_TOKEN": TOKEN, "HEARTH_DATA_DIR": str(tmp_path / "a")})
    a_again = Config.from_env({"HEARTH_ADMIN_TOKEN": TOKEN, "HEARTH_DATA_DIR": str(tmp_path / "a")})
    b = Config.from_env({"HEARTH_ADMIN_TOKEN": TOKEN, "HEARTH_DATA_DIR": str(tmp_path / "b")})
    assert a.pool_id == a_again.pool_id
    assert a.pool_id != b.pool_id
    for pool_id in (a.pool_id, b.pool_id):
        assert len(pool_id) == 10
        assert all(ch in "0123456789abcdef" for ch in pool_id)


def test_default_pool_id_follows_the_resolved_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = Config.from_env({"HEARTH_ADMIN_TOKEN": TOKEN, "HEARTH_DATA_DIR": "data"})
    absolute = Config.from_env({"HEARTH_ADMIN_TOKEN": TOKEN, "HEARTH_DATA_DIR": str(tmp_path / "data")})
    assert relative.pool_id == absolute.pool_id


@pytest.mark.parametrize("pool_id", ["a", "prod", "Pool-1", "a-b-c", "x" * 32, "0"])
def test_good_pool_ids(base: dict[str, str], pool_id: str) -> None:
    assert Config.from_env({**base, "HEARTH_POOL_ID": pool_id}).pool_id == pool_id


@pytest.mark.parametrize(
    "pool_id", ["-", "---", "x" * 33, "has space", "under_score", "dot.ted", "sl/ash", "a:b", "é!", "-lead"]
)
def test_bad_pool_ids(base: dict[str, str], pool_id: str) -> None:
    with pytest.raises(ConfigError, match="HEARTH_POOL_ID"):
        Config.from_env({**base, "HEARTH_POOL_ID": pool_id})


def test_non_ascii_pool_ids_rejected(base: dict[str, str]) -> None:
    for pool_id in ["pööl", "池", "²"]:
        with pytest.raises(ConfigError, match="HEARTH_POOL_ID"):
            Config.from_env({**base, "HEARTH_POOL_ID": pool_id})


def test_empty_pool_id_means_default(base: dict[str, str]) -> None:
    assert Config.from_env({**base, "HEARTH_POOL_ID": ""}).pool_id == Config.from_env(base).pool_id


# -- bad values ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HEARTH_CONTROL_PORT", "eighty"),
        ("HEARTH_CONTROL_PORT", "-1"),
        ("HEARTH_CONTROL_PORT", "65536"),
        ("HEARTH_PREWARM", "-1"),
        ("HEARTH_PREWARM", "two"),
        ("HEARTH_DEFAULT_MEMORY_MB", "15"),
        ("HEARTH_DEFAULT_MEMORY_MB", "128MB"),
        ("HEARTH_MAX_MEMORY_MB", "1.5"),
        ("HEARTH_DEFAULT_TIMEOUT_S", "0"),
        ("HEARTH_DEFAULT_TIMEOUT_S", "forever"),
        ("HEARTH_MAX_TIMEOUT_S", "nan"),
        ("HEARTH_CONTAINER_CPUS", "0"),
        ("HEARTH_CONTAINER_CPUS", "one"),
        ("HEARTH_PIDS_LIMIT", "7"),
        ("HEARTH_TMPFS_MB", "0"),
        ("HEARTH_HEALTH_INTERVAL_S", "0.01"),
        ("HEARTH_HEALTH_TIMEOUT_S", "-2"),
        ("HEARTH_START_TIMEOUT_S", "0.5"),
        ("HEARTH_MAX_CONTAINERS", "0"),
        ("HEARTH_ROUTES_POLL_S", "0.05"),
        ("HEARTH_REMOVE_ON_EXIT", "maybe"),
        ("HEARTH_REMOVE_ON_EXIT", "2"),
    ],
)
def test_bad_value_names_the_variable(base: dict[str, str], name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env({**base, name: value})


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), ("YES", True), (" on ", True),
     ("0", False), ("False", False), ("no", False), ("off", False), ("", False)],
)
def test_remove_on_exit_bool(base: dict[str, str], value: str, expected: bool) -> None:
    assert Config.from_env({**base, "HEARTH_REMOVE_ON_EXIT": value}).remove_on_exit is expected


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"HEARTH_DEFAULT_MEMORY_MB": "512", "HEARTH_MAX_MEMORY_MB": "256"}, "HEARTH_DEFAULT_MEMORY_MB"),
        ({"HEARTH_DEFAULT_TIMEOUT_S": "60", "HEARTH_MAX_TIMEOUT_S": "30"}, "HEARTH_DEFAULT_TIMEOUT_S"),
        ({"HEARTH_PREWARM": "5", "HEARTH_MAX_CONTAINERS": "4"}, "HEARTH_PREWARM"),
        ({"HEARTH_MAX_CONTAINERS": "1"}, "HEARTH_PREWARM"),  # the default prewarm of 2 no longer fits
        ({"HEARTH_CONTROL_HOST": "0.0.0.0"}, "HEARTH_CONTROL_HOST must be a loopback"),
        ({"HEARTH_CONTROL_HOST": "10.1.2.3"}, "HEARTH_CONTROL_HOST must be a loopback"),
        ({"HEARTH_CONTROL_HOST": "pm.example"}, "HEARTH_CONTROL_HOST must be a loopback"),
    ],
)
def test_inconsistent_settings(base: dict[str, str], environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Config.from_env({**base, **environ})


@pytest.mark.parametrize(
    ("environ", "attr", "expected"),
    [
        ({"HEARTH_DEFAULT_MEMORY_MB": "256", "HEARTH_MAX_MEMORY_MB": "256"}, "default_memory_mb", 256),
        ({"HEARTH_DEFAULT_TIMEOUT_S": "5", "HEARTH_MAX_TIMEOUT_S": "5"}, "max_timeout_s", 5.0),
        ({"HEARTH_PREWARM": "4", "HEARTH_MAX_CONTAINERS": "4"}, "prewarm", 4),
        ({"HEARTH_PREWARM": "0", "HEARTH_MAX_CONTAINERS": "1"}, "max_containers", 1),
        ({"HEARTH_CONTROL_PORT": "0"}, "control_port", 0),
        ({"HEARTH_CONTROL_HOST": "::1"}, "control_host", "::1"),
        ({"HEARTH_CONTROL_HOST": "localhost"}, "control_host", "localhost"),
        ({"HEARTH_CONTAINER_CPUS": "0.5"}, "cpus", 0.5),
        ({"HEARTH_RUNTIME_IMAGE": "registry.local/rt:1"}, "image", "registry.local/rt:1"),
    ],
)
def test_consistent_settings(
    base: dict[str, str], environ: dict[str, str], attr: str, expected: object
) -> None:
    assert getattr(Config.from_env({**base, **environ}), attr) == expected
