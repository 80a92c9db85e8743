"""Settings of async calls, callbacks and webhooks: part of the gateway's frozen Config."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass

from hearth.env import ConfigError, env_float, env_int, env_str

SYNC_MODES = ("full", "normal")


@dataclass(frozen=True)
class CallsConfig:
    """Every default lives here; ``from_env`` only overrides and validates."""

    workers: int = 32  # async calls dispatched at once
    retention_s: float = 86400.0  # finished calls are kept this long
    failed_retention_s: float = 7 * 86400.0  # the dead-letter list is kept longer
    # "full" fsyncs every group commit (survives power loss), "normal" only
    # at checkpoints (survives a process crash, may lose the last commits
    # on power loss).
    sync: str = "full"
    max_deferrals: int = 10  # times a call that reached no container is put back
    defer_base_s: float = 1.0
    defer_cap_s: float = 30.0
    callback_secret: str = ""  # empty: derived from the admin token (see callbacks.signing_key)
    callback_timeout_s: float = 10.0
    callback_max_attempts: int = 8
    callback_backoff_base_s: float = 1.0
    callback_backoff_cap_s: float = 300.0
    callback_hosts: frozenset[str] = frozenset()  # empty: any host
    dedup_window_s: int = 3600
    dedup_redis_url: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CallsConfig:
        d = cls()
        config = cls(
            workers=env_int(environ, "HEARTH_ASYNC_WORKERS", d.workers, minimum=1),
            retention_s=env_float(environ, "HEARTH_CALLS_RETENTION_S", d.retention_s, minimum=1.0),
            failed_retention_s=env_float(
                environ, "HEARTH_CALLS_FAILED_RETENTION_S", d.failed_retention_s, minimum=1.0
            ),
            sync=env_str(environ, "HEARTH_CALLS_SYNC", d.sync).lower(),
            max_deferrals=env_int(environ, "HEARTH_CALLS_MAX_DEFERRALS", d.max_deferrals, minimum=0),
            defer_base_s=env_float(environ, "HEARTH_CALLS_DEFER_BASE_S", d.defer_base_s, minimum=0.001),
            defer_cap_s=env_float(environ, "HEARTH_CALLS_DEFER_CAP_S", d.defer_cap_s, minimum=0.001),
            callback_secret=environ.get("HEARTH_CALLBACK_SECRET", ""),
            callback_timeout_s=env_float(
                environ, "HEARTH_CALLBACK_TIMEOUT_S", d.callback_timeout_s, minimum=0.01
            ),
            callback_max_attempts=env_int(
                environ, "HEARTH_CALLBACK_MAX_ATTEMPTS", d.callback_max_attempts, minimum=1
            ),
            callback_backoff_base_s=env_float(
                environ, "HEARTH_CALLBACK_BACKOFF_BASE_S", d.callback_backoff_base_s, minimum=0.001
            ),
            callback_backoff_cap_s=env_float(
                environ, "HEARTH_CALLBACK_BACKOFF_CAP_S", d.callback_backoff_cap_s, minimum=0.001
            ),
            callback_hosts=_hosts(environ.get("HEARTH_CALLBACK_HOSTS", "")),
            dedup_window_s=env_int(environ, "HEARTH_DEDUP_WINDOW_S", d.dedup_window_s, minimum=1),
            dedup_redis_url=environ.get("HEARTH_DEDUP_REDIS_URL", ""),
        )
        config.validate()
        return config

    def validate(self) -> None:
        if self.sync not in SYNC_MODES:
            raise ConfigError(f"HEARTH_CALLS_SYNC must be one of {', '.join(SYNC_MODES)}, got {self.sync!r}")
        if self.callback_secret and len(self.callback_secret) < 16:
            raise ConfigError("HEARTH_CALLBACK_SECRET must be at least 16 characters when set")
        if self.callback_backoff_cap_s < self.callback_backoff_base_s:
            raise ConfigError("HEARTH_CALLBACK_BACKOFF_CAP_S must be at least HEARTH_CALLBACK_BACKOFF_BASE_S")
        if self.defer_cap_s < self.defer_base_s:
            raise ConfigError("HEARTH_CALLS_DEFER_CAP_S must be at least HEARTH_CALLS_DEFER_BASE_S")
        if self.dedup_redis_url and not self.dedup_redis_url.startswith(("redis://", "rediss://")):
            raise ConfigError(
                f"HEARTH_DEDUP_REDIS_URL must be a redis:// or rediss:// URL, got {self.dedup_redis_url!r}"
            )
        if self.dedup_redis_url and importlib.util.find_spec("redis") is None:
            raise ConfigError("HEARTH_DEDUP_REDIS_URL needs the redis package: pip install 'hearth[redis]'")


def _hosts(raw: str) -> frozenset[str]:
    return frozenset(h.strip().lower() for h in raw.split(",") if h.strip())
