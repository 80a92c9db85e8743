"""Where the `hearth` CLI finds the gateway, the admin token and the data directory."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hearth.env import ConfigError, default_data_dir, env_port

__all__ = [
    "CliError",
    "Settings",
    "data_dir",
    "default_data_dir",
    "gateway_url",
    "load_or_create_token",
    "resolve_token",
    "token_path",
]

TOKEN_FILE = "admin-token"


class CliError(Exception):
    """An expected failure: printed as one line, never as a traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Settings:
    """What every command needs: where the gateway is and how to prove we are admin."""

    gateway_url: str
    environ: Mapping[str, str]
    token_override: str | None = None

    def admin_token(self) -> str:
        # Resolved on demand: `invoke` must neither need nor send the admin token.
        token = resolve_token(self.environ, self.token_override)
        if not token:
            raise CliError(
                "no admin token: pass --token, set HEARTH_ADMIN_TOKEN, or run `hearth up`"
                f" (it stores one in {token_path(self.environ)})",
                exit_code=2,
            )
        return token


def data_dir(environ: Mapping[str, str]) -> Path:
    raw = environ.get("HEARTH_DATA_DIR") or str(default_data_dir(environ))
    return Path(raw).expanduser()


def token_path(environ: Mapping[str, str]) -> Path:
    return data_dir(environ) / TOKEN_FILE


def gateway_url(environ: Mapping[str, str], override: str | None = None) -> str:
    url = override or environ.get("HEARTH_GATEWAY_URL")
    if not url:
        try:
            port = env_port(environ, "HEARTH_GATEWAY_PORT", 8080)
        except ConfigError as err:
            raise CliError(str(err), exit_code=2) from None
        url = f"http://127.0.0.1:{port}"
    if not url.startswith(("http://", "https://")):
        raise CliError(f"the gateway URL must start with http:// or https://, got {url!r}", 2)
    return url.rstrip("/")


def read_token_file(path: Path) -> str | None:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise CliError(f"cannot read the admin token from {path}: {err.strerror}", 2) from None
    return token or None


def resolve_token(environ: Mapping[str, str], override: str | None = None) -> str | None:
    """--token, then HEARTH_ADMIN_TOKEN, then the file `hearth up` wrote."""
    return override or environ.get("HEARTH_ADMIN_TOKEN") or read_token_file(token_path(environ))


def load_or_create_token(path: Path) -> str:
    """Reuse the stored token so clients keep working across restarts of `hearth up`."""
    token = read_token_file(path)
    if token:
        return token
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    # Created 0600 from the first byte (O_EXCL), then renamed into place, so
    # the secret is never readable by others nor seen half-written.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    os.replace(tmp, path)
    return token


def ensure_data_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
