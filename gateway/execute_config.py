"""Settings of ``POST /execute``: part of the gateway's frozen Config.

The maxima that the pool manager also reads (``HEARTH_EXECUTE_MAX_TIMEOUT_S``,
``HEARTH_EXECUTE_MAX_MEMORY_MB``, ``HEARTH_EXECUTE_OUTPUT_LIMIT_BYTES``) keep
the same names and defaults in both processes: the gateway caps requests by
them, the sandbox enforces them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hearth.env import ConfigError, env_float, env_int


@dataclass(frozen=True)
class ExecuteConfig:
    """Every default lives here; ``from_env`` only overrides and validates."""

    max_timeout_s: float = 30.0
    default_timeout_s: float = 10.0
    max_memory_mb: int = 256
    default_memory_mb: int = 128
    output_limit_bytes: int = 64 << 10  # per stream; past it the run is stopped
    max_code_bytes: int = 256 << 10
    max_stdin_bytes: int = 1 << 20
    max_files: int = 32
    max_files_bytes: int = 1 << 20  # all files together, decoded
    max_args: int = 64
    max_arg_bytes: int = 4096

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ExecuteConfig:
        d = cls()
        max_timeout_s = env_float(environ, "HEARTH_EXECUTE_MAX_TIMEOUT_S", d.max_timeout_s, minimum=0.1)
        max_memory_mb = env_int(environ, "HEARTH_EXECUTE_MAX_MEMORY_MB", d.max_memory_mb, minimum=16)
        config = cls(
            max_timeout_s=max_timeout_s,
            # An unset default follows a lowered maximum; a set one must fit under it.
            default_timeout_s=env_float(
                environ, "HEARTH_EXECUTE_DEFAULT_TIMEOUT_S", min(d.default_timeout_s, max_timeout_s), 0.1
            ),
            max_memory_mb=max_memory_mb,
            default_memory_mb=env_int(
                environ, "HEARTH_EXECUTE_DEFAULT_MEMORY_MB", min(d.default_memory_mb, max_memory_mb), 16
            ),
            output_limit_bytes=env_int(
                environ, "HEARTH_EXECUTE_OUTPUT_LIMIT_BYTES", d.output_limit_bytes, minimum=1
            ),
            max_code_bytes=env_int(environ, "HEARTH_EXECUTE_MAX_CODE_BYTES", d.max_code_bytes, minimum=1),
            max_stdin_bytes=env_int(environ, "HEARTH_EXECUTE_MAX_STDIN_BYTES", d.max_stdin_bytes),
            max_files=env_int(environ, "HEARTH_EXECUTE_MAX_FILES", d.max_files),
            max_files_bytes=env_int(environ, "HEARTH_EXECUTE_MAX_FILES_BYTES", d.max_files_bytes),
            max_args=env_int(environ, "HEARTH_EXECUTE_MAX_ARGS", d.max_args),
            max_arg_bytes=env_int(environ, "HEARTH_EXECUTE_MAX_ARG_BYTES", d.max_arg_bytes, minimum=1),
        )
        if config.default_timeout_s > config.max_timeout_s:
            raise ConfigError("HEARTH_EXECUTE_DEFAULT_TIMEOUT_S must not exceed HEARTH_EXECUTE_MAX_TIMEOUT_S")
        if config.default_memory_mb > config.max_memory_mb:
            raise ConfigError("HEARTH_EXECUTE_DEFAULT_MEMORY_MB must not exceed HEARTH_EXECUTE_MAX_MEMORY_MB")
        return config
