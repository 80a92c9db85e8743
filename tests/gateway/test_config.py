"""The gateway's Config.from_env: defaults and one named error per bad setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.config import Config, ConfigError

TOKEN = "admin-token-123"


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    return {"HEARTH_ADMIN_TOKEN": TOKEN, "HEARTH_DATA_DIR": str(tmp_path)}


def test_defaults(base: dict[str, str], tmp_path: Path) -> None:
    config = Config.from_env(base)
    assert config == Config(
        host="127.0.0.1",
        port=8080,
        admin_token=TOKEN,
        data_dir=tmp_path.resolve(),
        control_url="http://127.0.0.1:8081",
        control_token=TOKEN,
        max_body_bytes=6 * 1024 * 1024,
        queue_max=256,
        queue_timeout_s=30.0,
        timeout_margin_s=2.0,
        connect_timeout_s=1.0,
        breaker_threshold=3,
        breaker_open_s=5.0,
        retry_ratio=0.2,
        retry_min_per_s=10.0,
        max_attempts=3,
        report_interval_s=1.0,
        shutdown_timeout_s=30.0,
    )


def test_config_is_frozen(base: dict[str, str]) -> None:
    config = Config.from_env(base)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


def test_data_dir_defaults_under_xdg_data_home(tmp_path: Path) -> None:
    config = Config.from_env({"HEARTH_ADMIN_TOKEN": TOKEN, "XDG_DATA_HOME": str(tmp_path)})
    assert config.data_dir == (tmp_path / "hearth").resolve()


def test_data_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config.from_env({"HEARTH_ADMIN_TOKEN": TOKEN, "HEARTH_DATA_DIR": "rel/dir"})
    assert config.data_dir == (tmp_path / "rel" / "dir").resolve()
    assert config.data_dir.is_absolute()


def test_overrides(base: dict[str, str]) -> None:
    config = Config.from_env({
        **base,
        "HEARTH_GATEWAY_HOST": "0.0.0.0",
        "HEARTH_GATEWAY_PORT": "9000",
        "HEARTH_CONTROL_TOKEN": "other-token",
        "HEARTH_MAX_BODY_BYTES": "1024",
        "HEARTH_QUEUE_MAX": "0",
        "HEARTH_QUEUE_TIMEOUT_S": "2.5",
        "HEARTH_TIMEOUT_MARGIN_S": "0",
        "HEARTH_BREAKER_THRESHOLD": "1",
        "HEARTH_BREAKER_OPEN_S": "0.5",
        "HEARTH_RETRY_RATIO": "0",
        "HEARTH_MAX_ATTEMPTS": "7",
        "HEARTH_SHUTDOWN_TIMEOUT_S": "0",
    })
    assert (config.host, config.port) == ("0.0.0.0", 9000)
    assert (config.admin_token, config.control_token) == (TOKEN, "other-token")
    assert (config.max_body_bytes, config.queue_max, config.queue_timeout_s) == (1024, 0, 2.5)
    assert (config.timeout_margin_s, config.breaker_threshold, config.breaker_open_s) == (0.0, 1, 0.5)
    assert (config.retry_ratio, config.max_attempts, config.shutdown_timeout_s) == (0.0, 7, 0.0)


def test_empty_values_mean_default(base: dict[str, str]) -> None:
    config = Config.from_env({**base, "HEARTH_GATEWAY_PORT": "", "HEARTH_QUEUE_TIMEOUT_S": "",
                              "HEARTH_GATEWAY_HOST": "", "HEARTH_CONTROL_TOKEN": ""})
    assert (config.port, config.queue_timeout_s, config.host) == (8080, 30.0, "127.0.0.1")
    assert config.control_token == TOKEN


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"HEARTH_CONTROL_PORT": "9191"}, "http://127.0.0.1:9191"),
        ({"HEARTH_CONTROL_URL": "https://localhost:8443/"}, "https://localhost:8443/"),
        ({"HEARTH_CONTROL_URL": "http://[::1]:81", "HEARTH_CONTROL_PORT": "9191"}, "http://[::1]:81"),
        ({"HEARTH_CONTROL_URL": "http://127.0.0.2:81"}, "http://127.0.0.2:81"),
    ],
)
def test_control_url(base: dict[str, str], environ: dict[str, str], expected: str) -> None:
    assert Config.from_env({**base, **environ}).control_url == expected


@pytest.mark.parametrize("url", ["http://10.0.0.2:81", "https://pm.internal:8443/", "http://0.0.0.0:8081"])
def test_control_url_off_this_host_is_refused(base: dict[str, str], url: str) -> None:
    with pytest.raises(ConfigError, match="HEARTH_CONTROL_URL must name a loopback host"):
        Config.from_env({**base, "HEARTH_CONTROL_URL": url})


@pytest.mark.parametrize("token", [None, "", "x", "1234567"])
def test_missing_or_short_admin_token(tmp_path: Path, token: str | None) -> None:
    environ = {"HEARTH_DATA_DIR": str(tmp_path)}
    if token is not None:
        environ["HEARTH_ADMIN_TOKEN"] = token
    with pytest.raises(ConfigError, match="HEARTH_ADMIN_TOKEN"):
        Config.from_env(environ)


def test_eight_character_token_is_enough(tmp_path: Path) -> None:
    assert Config.from_env({"HEARTH_ADMIN_TOKEN": "12345678", "HEARTH_DATA_DIR": str(tmp_path)}).admin_token


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # ports
        ("HEARTH_GATEWAY_PORT", "http"),
        ("HEARTH_GATEWAY_PORT", "80.5"),
        ("HEARTH_GATEWAY_PORT", "-1"),
        ("HEARTH_GATEWAY_PORT", "65536"),
        ("HEARTH_CONTROL_PORT", "70000"),
        ("HEARTH_CONTROL_PORT", "x"),
        # integers
        ("HEARTH_MAX_BODY_BYTES", "lots"),
        ("HEARTH_MAX_BODY_BYTES", "1023"),
        ("HEARTH_QUEUE_MAX", "-1"),
        ("HEARTH_QUEUE_MAX", "1e3"),
        ("HEARTH_BREAKER_THRESHOLD", "0"),
        ("HEARTH_MAX_ATTEMPTS", "0"),
        ("HEARTH_MAX_ATTEMPTS", "two"),
        # floats
        ("HEARTH_QUEUE_TIMEOUT_S", "soon"),
        ("HEARTH_QUEUE_TIMEOUT_S", "0"),
        ("HEARTH_QUEUE_TIMEOUT_S", "nan"),
        ("HEARTH_TIMEOUT_MARGIN_S", "-0.5"),
        ("HEARTH_CONNECT_TIMEOUT_S", "0.001"),
        ("HEARTH_BREAKER_OPEN_S", "1s"),
        ("HEARTH_RETRY_RATIO", "-1"),
        ("HEARTH_RETRY_MIN_PER_S", "NaN"),
        ("HEARTH_REPORT_INTERVAL_S", "0"),
        ("HEARTH_SHUTDOWN_TIMEOUT_S", "-inf"),
        # the control URL
        ("HEARTH_CONTROL_URL", "127.0.0.1:8081"),
        ("HEARTH_CONTROL_URL", "ftp://pm"),
    ],
)
def test_bad_value_names_the_variable(base: dict[str, str], name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env({**base, name: value})


@pytest.mark.parametrize(
    ("name", "value", "attr", "expected"),
    [
        ("HEARTH_GATEWAY_PORT", "0", "port", 0),
        ("HEARTH_GATEWAY_PORT", "65535", "port", 65535),
        ("HEARTH_QUEUE_TIMEOUT_S", "0.01", "queue_timeout_s", 0.01),
        ("HEARTH_QUEUE_TIMEOUT_S", "1e1", "queue_timeout_s", 10.0),
        ("HEARTH_MAX_BODY_BYTES", " 2048 ", "max_body_bytes", 2048),
    ],
)
def test_boundary_values_accepted(
    base: dict[str, str], name: str, value: str, attr: str, expected: object
) -> None:
    assert getattr(Config.from_env({**base, name: value}), attr) == expected
