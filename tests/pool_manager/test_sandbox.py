"""The /execute sandbox as a built-in function: its settings, spec and load meta."""

from __future__ import annotations

from pathlib import Path

import pytest

from pool_manager.config import Config, ConfigError, SandboxConfig
from pool_manager.sandbox import CLEANUP_MARGIN_S, NAME, load_meta, sandbox_spec

TOKEN = "admin-token-123"


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    return {"HEARTH_ADMIN_TOKEN": TOKEN, "HEARTH_DATA_DIR": str(tmp_path), "HEARTH_MAX_CONTAINERS": "16"}


def test_defaults(base: dict[str, str]) -> None:
    assert Config.from_env(base).sandbox == SandboxConfig()


def test_settings_from_the_environment(base: dict[str, str]) -> None:
    config = Config.from_env({
        **base, "HEARTH_SANDBOX_MIN_SCALE": "2", "HEARTH_SANDBOX_MAX_SCALE": "6",
        "HEARTH_SANDBOX_MEMORY_MB": "1024", "HEARTH_SANDBOX_MAX_RUNS": "50",
        "HEARTH_EXECUTE_MAX_TIMEOUT_S": "12", "HEARTH_EXECUTE_MAX_MEMORY_MB": "512",
        "HEARTH_EXECUTE_OUTPUT_LIMIT_BYTES": "1000",
    })
    assert config.sandbox == SandboxConfig(
        min_scale=2, max_scale=6, memory_mb=1024, max_runs=50, max_timeout_s=12.0, max_memory_mb=512,
        output_limit_bytes=1000,
    )


def test_the_default_max_scale_fits_a_small_budget(base: dict[str, str]) -> None:
    config = Config.from_env({**base, "HEARTH_MAX_CONTAINERS": "3", "HEARTH_PREWARM": "1"})
    assert config.sandbox.max_scale == 3


def test_max_scale_zero_turns_the_sandbox_off(base: dict[str, str]) -> None:
    config = Config.from_env({**base, "HEARTH_SANDBOX_MAX_SCALE": "0"})
    assert config.sandbox.max_scale == 0  # __main__ then registers no built-in


@pytest.mark.parametrize(("settings", "fragment"), [
    ({"HEARTH_SANDBOX_MIN_SCALE": "5", "HEARTH_SANDBOX_MAX_SCALE": "2"}, "HEARTH_SANDBOX_MIN_SCALE must not"),
    ({"HEARTH_SANDBOX_MAX_SCALE": "17"}, "HEARTH_SANDBOX_MAX_SCALE must not exceed HEARTH_MAX_CONTAINERS"),
    ({"HEARTH_SANDBOX_MEMORY_MB": "200"}, "HEARTH_SANDBOX_MEMORY_MB must be at least"),
    ({"HEARTH_SANDBOX_MEMORY_MB": "32"}, "HEARTH_SANDBOX_MEMORY_MB must be at least 64"),
    ({"HEARTH_SANDBOX_MAX_RUNS": "0"}, "HEARTH_SANDBOX_MAX_RUNS"),
    ({"HEARTH_SANDBOX_MIN_SCALE": "-1"}, "HEARTH_SANDBOX_MIN_SCALE"),
    ({"HEARTH_EXECUTE_MAX_TIMEOUT_S": "long"}, "HEARTH_EXECUTE_MAX_TIMEOUT_S"),
])
def test_bad_settings_name_the_variable(
    base: dict[str, str], settings: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Config.from_env({**base, **settings})


def test_spec_is_a_builtin_with_one_run_per_container(base: dict[str, str]) -> None:
    config = Config.from_env({**base, "HEARTH_EXECUTE_MAX_TIMEOUT_S": "7"})
    spec = sandbox_spec(config)
    assert spec.name == NAME and NAME.startswith("_")
    assert (spec.concurrency, spec.min_scale, spec.max_scale) == (1, 1, 4)
    assert spec.timeout_s == 7 + CLEANUP_MARGIN_S
    assert spec.memory_mb == 512 and not spec.network
    assert load_meta(config) == {
        "mode": "sandbox", "max_runs": 200, "max_timeout_s": 7.0, "max_memory_mb": 256,
        "max_output_bytes": 64 << 10,
    }


def test_version_follows_the_settings(base: dict[str, str]) -> None:
    one = sandbox_spec(Config.from_env(base)).version
    assert one == sandbox_spec(Config.from_env(base)).version
    assert one != sandbox_spec(Config.from_env({**base, "HEARTH_SANDBOX_MAX_RUNS": "10"})).version
    assert one != sandbox_spec(Config.from_env({**base, "HEARTH_SANDBOX_MAX_SCALE": "2"})).version
