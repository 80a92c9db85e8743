"""The pool manager's settings: one frozen object, built from HEARTH_* variables."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

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
from pool_manager.autoscaler import POLICY_LIMITS, ScalePolicy, policy_errors

__all__ = ["Config", "ConfigError"]


# A unix socket path must fit in 108 bytes; the runtime's socket sits two
# levels below this directory.
MAX_SOCKET_DIR_LEN = 80


def _sockets_dir(environ: Mapping[str, str], data_dir: Path, pool_id: str) -> Path:
    given = environ.get("HEARTH_SOCKET_DIR", "")
    if given:
        path = Path(given).expanduser().resolve()
        if len(str(path)) > MAX_SOCKET_DIR_LEN:
            raise ConfigError(
                f"HEARTH_SOCKET_DIR must be at most {MAX_SOCKET_DIR_LEN} characters "
                f"(unix socket paths are short), got {len(str(path))}"
            )
        return path
    under_data = data_dir / "sockets"
    if len(str(under_data)) <= MAX_SOCKET_DIR_LEN:
        return under_data
    # A deep data dir (a test's tmp dir, say) would make socket paths too long.
    return Path("/tmp") / f"hearth-{os.getuid()}-{pool_id}"


# Variable name for each ScalePolicy knob, e.g. HEARTH_STABLE_WINDOW_S.
POLICY_VARS = {name: f"HEARTH_{name.upper()}" for name in POLICY_LIMITS}


def _scale_policy(environ: Mapping[str, str]) -> ScalePolicy:
    defaults = ScalePolicy()
    values = {name: env_float(environ, var, getattr(defaults, name)) for name, var in POLICY_VARS.items()}
    policy = ScalePolicy(**values)
    errors = policy_errors(policy)
    if errors:
        # Name the variable, not the knob: that is what the operator set.
        for name, var in POLICY_VARS.items():
            errors = [e.replace(name, var) for e in errors]
        raise ConfigError("; ".join(errors))
    return policy


def default_budget(default_memory_mb: int) -> int:
    """Containers the host can hold: 80 % of its memory at the default size, within 4..256."""
    try:
        with open("/proc/meminfo") as f:
            total_kb = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
    except (OSError, StopIteration, ValueError):
        return 64
    return max(4, min(256, int(total_kb / 1024 * 0.8 / default_memory_mb)))


@dataclass(frozen=True)
class SandboxConfig:
    """The /execute sandbox pool (``pool_manager/sandbox.py``); max_scale 0 turns it off."""

    min_scale: int = 1
    max_scale: int = 4
    memory_mb: int = 512  # per container: a run's memory_mb plus tmpfs, /dev/shm, supervisor
    max_runs: int = 200  # runs before a container is recycled anyway
    # Shared with the gateway, which caps requests by the same variables.
    max_timeout_s: float = 30.0
    max_memory_mb: int = 256
    output_limit_bytes: int = 64 << 10

    @classmethod
    def from_env(cls, environ: Mapping[str, str], max_containers: int) -> SandboxConfig:
        d = cls()
        config = cls(
            min_scale=env_int(environ, "HEARTH_SANDBOX_MIN_SCALE", d.min_scale),
            max_scale=env_int(environ, "HEARTH_SANDBOX_MAX_SCALE", min(d.max_scale, max_containers)),
            memory_mb=env_int(environ, "HEARTH_SANDBOX_MEMORY_MB", d.memory_mb, minimum=64),
            max_runs=env_int(environ, "HEARTH_SANDBOX_MAX_RUNS", d.max_runs, minimum=1),
            max_timeout_s=env_float(environ, "HEARTH_EXECUTE_MAX_TIMEOUT_S", d.max_timeout_s, minimum=0.1),
            max_memory_mb=env_int(environ, "HEARTH_EXECUTE_MAX_MEMORY_MB", d.max_memory_mb, minimum=16),
            output_limit_bytes=env_int(
                environ, "HEARTH_EXECUTE_OUTPUT_LIMIT_BYTES", d.output_limit_bytes, minimum=1
            ),
        )
        if config.max_scale and config.min_scale > config.max_scale:
            raise ConfigError("HEARTH_SANDBOX_MIN_SCALE must not exceed HEARTH_SANDBOX_MAX_SCALE")
        if config.max_scale > max_containers:
            raise ConfigError("HEARTH_SANDBOX_MAX_SCALE must not exceed HEARTH_MAX_CONTAINERS")
        if config.memory_mb < config.max_memory_mb + 64:
            raise ConfigError(
                "HEARTH_SANDBOX_MEMORY_MB must be at least HEARTH_EXECUTE_MAX_MEMORY_MB + 64 "
                "(the runtime, the scratch tmpfs and /dev/shm share the container's memory)"
            )
        return config


@dataclass(frozen=True)
class Config:
    """Everything the pool manager reads from its environment."""

    data_dir: Path
    admin_token: str
    control_token: str
    control_host: str
    control_port: int
    image: str
    pool_id: str
    prewarm: int
    default_memory_mb: int
    max_memory_mb: int
    default_timeout_s: float
    max_timeout_s: float
    cpus: float
    pids_limit: int
    tmpfs_mb: int
    health_interval_s: float
    health_timeout_s: float
    start_timeout_s: float
    max_containers: int
    remove_on_exit: bool
    routes_poll_s: float
    sockets_dir: Path
    scale_policy: ScalePolicy
    prewarm_max: int
    autoscale_tick_s: float
    prewarm_window_s: float = 60.0
    # Keyword-only, so fields added after it need no default.
    sandbox: SandboxConfig = field(default_factory=SandboxConfig, kw_only=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        admin_token = environ.get("HEARTH_ADMIN_TOKEN", "")
        if len(admin_token) < 8:
            raise ConfigError("HEARTH_ADMIN_TOKEN must be set to a secret of at least 8 characters")
        data_dir = Path(env_str(environ, "HEARTH_DATA_DIR", str(default_data_dir(environ))))
        data_dir = data_dir.expanduser().resolve()
        # Containers are labelled with the pool id, so two Hearths on one
        # engine (or a test beside a real install) never adopt each other's.
        default_pool = hashlib.sha256(str(data_dir).encode()).hexdigest()[:10]
        pool_id = env_str(environ, "HEARTH_POOL_ID", default_pool)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}", pool_id):
            raise ConfigError(f"HEARTH_POOL_ID must be 1-32 letters, digits or '-', got {pool_id!r}")
        default_memory_mb = env_int(environ, "HEARTH_DEFAULT_MEMORY_MB", 128, minimum=16)
        prewarm = env_int(environ, "HEARTH_PREWARM", 2)
        config = cls(
            data_dir=data_dir,
            admin_token=admin_token,
            control_token=env_str(environ, "HEARTH_CONTROL_TOKEN", admin_token),
            control_host=env_str(environ, "HEARTH_CONTROL_HOST", "127.0.0.1"),
            control_port=env_port(environ, "HEARTH_CONTROL_PORT", 8081),
            image=env_str(environ, "HEARTH_RUNTIME_IMAGE", "hearth-runtime:latest"),
            pool_id=pool_id,
            prewarm=prewarm,
            default_memory_mb=default_memory_mb,
            max_memory_mb=env_int(environ, "HEARTH_MAX_MEMORY_MB", 2048, minimum=16),
            default_timeout_s=env_float(environ, "HEARTH_DEFAULT_TIMEOUT_S", 30.0, minimum=0.01),
            max_timeout_s=env_float(environ, "HEARTH_MAX_TIMEOUT_S", 300.0, minimum=0.01),
            cpus=env_float(environ, "HEARTH_CONTAINER_CPUS", 1.0, minimum=0.01),
            pids_limit=env_int(environ, "HEARTH_PIDS_LIMIT", 128, minimum=8),
            tmpfs_mb=env_int(environ, "HEARTH_TMPFS_MB", 64, minimum=1),
            health_interval_s=env_float(environ, "HEARTH_HEALTH_INTERVAL_S", 2.0, minimum=0.05),
            health_timeout_s=env_float(environ, "HEARTH_HEALTH_TIMEOUT_S", 2.0, minimum=0.05),
            start_timeout_s=env_float(environ, "HEARTH_START_TIMEOUT_S", 30.0, minimum=1.0),
            max_containers=env_int(
                environ, "HEARTH_MAX_CONTAINERS", default_budget(default_memory_mb), minimum=1
            ),
            remove_on_exit=env_bool(environ, "HEARTH_REMOVE_ON_EXIT", False),
            routes_poll_s=env_float(environ, "HEARTH_ROUTES_POLL_S", 25.0, minimum=0.1),
            sockets_dir=_sockets_dir(environ, data_dir, pool_id),
            scale_policy=_scale_policy(environ),
            prewarm_max=env_int(environ, "HEARTH_PREWARM_MAX", max(prewarm, 8)),
            autoscale_tick_s=env_float(environ, "HEARTH_AUTOSCALE_TICK_S", 1.0, minimum=0.05),
            prewarm_window_s=env_float(environ, "HEARTH_PREWARM_WINDOW_S", 60.0, minimum=1.0),
        )
        config = replace(config, sandbox=SandboxConfig.from_env(environ, config.max_containers))
        config.validate()
        return config

    def validate(self) -> None:
        # The control API hands out webhook secrets and container sockets, and
        # the gateway must share this host's socket directory anyway.
        if not is_loopback(self.control_host):
            raise ConfigError(
                f"HEARTH_CONTROL_HOST must be a loopback address (127.0.0.1, ::1), got {self.control_host!r}"
            )
        if self.default_memory_mb > self.max_memory_mb:
            raise ConfigError("HEARTH_DEFAULT_MEMORY_MB must not exceed HEARTH_MAX_MEMORY_MB")
        if self.default_timeout_s > self.max_timeout_s:
            raise ConfigError("HEARTH_DEFAULT_TIMEOUT_S must not exceed HEARTH_MAX_TIMEOUT_S")
        if self.prewarm_max < self.prewarm:
            raise ConfigError("HEARTH_PREWARM_MAX must be at least HEARTH_PREWARM")
        if self.prewarm > self.max_containers:
            raise ConfigError("HEARTH_PREWARM must not exceed HEARTH_MAX_CONTAINERS")

    @property
    def functions_dir(self) -> Path:
        return self.data_dir / "functions"



def from_process_env() -> Config:
    return Config.from_env(os.environ)
