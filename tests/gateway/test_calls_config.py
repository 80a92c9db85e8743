"""Async-call settings: defaults, and one named error per bad setting."""

from __future__ import annotations

import pytest

from gateway.calls_config import CallsConfig
from gateway.config import Config, ConfigError


def test_defaults_need_no_setting() -> None:
    assert CallsConfig.from_env({}) == CallsConfig()
    assert Config.from_env({"HEARTH_ADMIN_TOKEN": "admin-token-123"}).calls == CallsConfig()


def test_settings_are_read() -> None:
    config = CallsConfig.from_env({
        "HEARTH_ASYNC_WORKERS": "4", "HEARTH_CALLS_SYNC": "NORMAL",
        "HEARTH_CALLBACK_HOSTS": " a.example, 127.0.0.1 ,", "HEARTH_CALLBACK_BACKOFF_BASE_S": "0.05",
        "HEARTH_CALLBACK_BACKOFF_CAP_S": "0.2", "HEARTH_DEDUP_REDIS_URL": "redis://127.0.0.1:6379/0",
        "HEARTH_CALLBACK_SECRET": "0123456789abcdef",
    })
    assert (config.workers, config.sync, config.callback_backoff_cap_s) == (4, "normal", 0.2)
    assert config.callback_hosts == frozenset({"a.example", "127.0.0.1"})
    assert config.dedup_redis_url == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(("env", "named"), [
    ({"HEARTH_ASYNC_WORKERS": "0"}, "HEARTH_ASYNC_WORKERS"),
    ({"HEARTH_CALLS_SYNC": "off"}, "HEARTH_CALLS_SYNC"),
    ({"HEARTH_CALLBACK_SECRET": "short"}, "HEARTH_CALLBACK_SECRET"),
    ({"HEARTH_CALLBACK_BACKOFF_BASE_S": "10", "HEARTH_CALLBACK_BACKOFF_CAP_S": "1"},
     "HEARTH_CALLBACK_BACKOFF_CAP_S"),
    ({"HEARTH_CALLS_DEFER_BASE_S": "10", "HEARTH_CALLS_DEFER_CAP_S": "1"}, "HEARTH_CALLS_DEFER_CAP_S"),
    ({"HEARTH_DEDUP_REDIS_URL": "memcached://x"}, "HEARTH_DEDUP_REDIS_URL"),
    ({"HEARTH_DEDUP_WINDOW_S": "nan"}, "HEARTH_DEDUP_WINDOW_S"),
    ({"HEARTH_CALLS_RETENTION_S": "0"}, "HEARTH_CALLS_RETENTION_S"),
])
def test_bad_settings_are_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        CallsConfig.from_env(env)
