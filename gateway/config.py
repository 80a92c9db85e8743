"""The gateway's settings: one frozen object, built from HEARTH_* variables."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.calls_config import CallsConfig
from gateway.execute_config import ExecuteConfig
from hearth.env import (
    ConfigError,
    default_data_dir,
    env_bool,
    env_float,
    env_int,
    env_port,
    env_str,
    is_loopback,
)

__all__ = ["Config", "ConfigError"]


@dataclass(frozen=True)
class Config:
    """Everything the gateway reads from its environment."""

    host: str
    port: int
    admin_token: str
    data_dir: Path
    control_url: str
    control_token: str
    max_body_bytes: int
    queue_max: int
    queue_timeout_s: float
    timeout_margin_s: float
    connect_timeout_s: float
    breaker_threshold: int
    breaker_open_s: float
    retry_ratio: float
    retry_min_per_s: float
    max_attempts: int
    report_interval_s: float
    shutdown_timeout_s: float
    # Keyword-only, so fields added after it need no default.
    calls: CallsConfig = field(default_factory=CallsConfig, kw_only=True)  # async calls, callbacks, hooks
    execute: ExecuteConfig = field(default_factory=ExecuteConfig, kw_only=True)  # POST /execute
    access_log: bool = field(default=True, kw_only=True)  # a JSON line per invocation

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        admin_token = environ.get("HEARTH_ADMIN_TOKEN", "")
        if len(admin_token) < 8:
            raise ConfigError("HEARTH_ADMIN_TOKEN must be set to a secret of at least 8 characters")
        control_port = env_port(environ, "HEARTH_CONTROL_PORT", 8081)
        data_dir = Path(env_str(environ, "HEARTH_DATA_DIR", str(default_data_dir(environ))))
        config = cls(
            host=env_str(environ, "HEARTH_GATEWAY_HOST", "127.0.0.1"),
            port=env_port(environ, "HEARTH_GATEWAY_PORT", 8080),
            admin_token=admin_token,
            data_dir=data_dir.expanduser().resolve(),
            control_url=env_str(environ, "HEARTH_CONTROL_URL", f"http://127.0.0.1:{control_port}"),
            control_token=env_str(environ, "HEARTH_CONTROL_TOKEN", admin_token),
            max_body_bytes=env_int(environ, "HEARTH_MAX_BODY_BYTES", 6 << 20, minimum=1024),
            queue_max=env_int(environ, "HEARTH_QUEUE_MAX", 256, minimum=0),
            queue_timeout_s=env_float(environ, "HEARTH_QUEUE_TIMEOUT_S", 30.0, minimum=0.01),
            timeout_margin_s=env_float(environ, "HEARTH_TIMEOUT_MARGIN_S", 2.0, minimum=0.0),
            connect_timeout_s=env_float(environ, "HEARTH_CONNECT_TIMEOUT_S", 1.0, minimum=0.01),
            breaker_threshold=env_int(environ, "HEARTH_BREAKER_THRESHOLD", 3, minimum=1),
            breaker_open_s=env_float(environ, "HEARTH_BREAKER_OPEN_S", 5.0, minimum=0.01),
            retry_ratio=env_float(environ, "HEARTH_RETRY_RATIO", 0.2, minimum=0.0),
            retry_min_per_s=env_float(environ, "HEARTH_RETRY_MIN_PER_S", 10.0, minimum=0.0),
            max_attempts=env_int(environ, "HEARTH_MAX_ATTEMPTS", 3, minimum=1),
            report_interval_s=env_float(environ, "HEARTH_REPORT_INTERVAL_S", 1.0, minimum=0.01),
            shutdown_timeout_s=env_float(environ, "HEARTH_SHUTDOWN_TIMEOUT_S", 30.0, minimum=0.0),
            access_log=env_bool(environ, "HEARTH_ACCESS_LOG", True),
            calls=CallsConfig.from_env(environ),
            execute=ExecuteConfig.from_env(environ),
        )
        if not config.control_url.startswith(("http://", "https://")):
            raise ConfigError(f"HEARTH_CONTROL_URL must be an http(s) URL, got {config.control_url!r}")
        # The pool manager runs beside the gateway: its containers' sockets are
        # in a directory both share. The token must not travel further.
        if not is_loopback(urllib.parse.urlsplit(config.control_url).hostname or ""):
            raise ConfigError(f"HEARTH_CONTROL_URL must name a loopback host, got {config.control_url!r}")
        return config
