"""The function registry: specs and code, on disk, crash-safe.

Each function is two files under ``functions/``: ``NAME.zip`` (its code)
and ``NAME.json`` (its spec, naming the code's digest). Both are written
to a temporary file, fsynced and renamed, code first, so a crash leaves
either the old record or the new one, never half of either.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import tarfile
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from pool_manager.autoscaler import POLICY_LIMITS, policy_errors
from pool_manager.config import Config

NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
HANDLER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_CODE_BYTES = 16 << 20
SPEC_FIELDS = {
    "source", "archive", "handler", "timeout_s", "memory_mb", "concurrency",
    "min_scale", "max_scale", "env", "network", "webhook_secret", "autoscale",
}


class InvalidSpec(ValueError):
    """A deploy request is malformed; the message says which field and why."""


class UnknownFunction(KeyError):
    """No function of that name is deployed."""


@dataclass(frozen=True)
class FunctionSpec:
    """A deployed function's settings; ``version`` is the digest of code and settings."""

    name: str
    handler: str = "main.handle"
    timeout_s: float = 30.0
    memory_mb: int = 128
    concurrency: int = 1
    min_scale: int = 0
    max_scale: int = 10
    env: dict[str, str] = field(default_factory=dict)
    network: bool = False
    webhook_secret: str | None = None
    autoscale: dict[str, float] = field(default_factory=dict)  # overrides of the global ScalePolicy
    version: str = ""

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data["webhook_secret"] = "***" if self.webhook_secret else None
        return data


def validate_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise InvalidSpec(
            f"invalid function name {name!r}: use 1-63 lowercase letters, digits and '-', "
            "starting with a letter or digit"
        )
    return name


def _number(body: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSpec(f"{key} must be a number")
    if not lo <= value <= hi:
        raise InvalidSpec(f"{key} must be between {lo:g} and {hi:g}, got {value}")
    return value


def _integer(body: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec(f"{key} must be an integer")
    if not lo <= value <= hi:
        raise InvalidSpec(f"{key} must be between {lo} and {hi}, got {value}")
    return value


def _env(body: dict[str, Any]) -> dict[str, str]:
    env = body.get("env", {})
    if not isinstance(env, dict):
        raise InvalidSpec("env must be an object of string values")
    for key, value in env.items():
        if not ENV_KEY_RE.fullmatch(key) or key.startswith("HEARTH_"):
            raise InvalidSpec(f"env key {key!r} is not a valid variable name (HEARTH_* is reserved)")
        if not isinstance(value, str):
            raise InvalidSpec(f"env value of {key!r} must be a string")
    return dict(env)


def _autoscale(body: dict[str, Any], config: Config) -> dict[str, float]:
    overrides = body.get("autoscale", {})
    if not isinstance(overrides, dict):
        raise InvalidSpec("autoscale must be an object, e.g. {\"stable_window_s\": 30}")
    unknown = set(overrides) - set(POLICY_LIMITS)
    if unknown:
        raise InvalidSpec(
            f"unknown autoscale setting(s): {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(POLICY_LIMITS))}"
        )
    for key, value in overrides.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidSpec(f"autoscale.{key} must be a number")
    errors = policy_errors(replace(config.scale_policy, **overrides))
    if errors:
        raise InvalidSpec("autoscale: " + "; ".join(errors))
    return {key: float(value) for key, value in overrides.items()}


def _safe_member(name: str) -> str:
    parts = name.replace("\\", "/").split("/")
    if name.startswith("/") or ".." in parts or not name.strip("/"):
        raise InvalidSpec(f"archive member {name!r} has an unsafe path")
    return name


def _zip_from_archive(raw: bytes) -> bytes:
    """Accept a zip or a tar.gz, check every path, and return a zip."""
    if raw[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                for info in zf.infolist():
                    _safe_member(info.filename)
            return raw
        except zipfile.BadZipFile as exc:
            raise InvalidSpec(f"archive is not a valid zip: {exc}") from None
    out = io.BytesIO()
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:*") as tf, zipfile.ZipFile(
            out, "w", zipfile.ZIP_DEFLATED
        ) as zf:
            for member in tf.getmembers():
                if member.isdir():
                    continue
                if not member.isfile():
                    raise InvalidSpec(f"archive member {member.name!r} is not a regular file")
                data = tf.extractfile(member)
                assert data is not None
                zf.writestr(_entry(_safe_member(member.name.removeprefix("./"))), data.read())
    except tarfile.TarError as exc:
        raise InvalidSpec(f"archive is neither a zip nor a tar.gz: {exc}") from None
    return out.getvalue()


def _entry(name: str) -> zipfile.ZipInfo:
    # A fixed timestamp: the same code must give the same bytes, hence the
    # same version, or every redeploy would replace all containers.
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def code_from_body(body: dict[str, Any]) -> bytes:
    """The function's code as a zip, from ``source`` or a base64 ``archive``."""
    source, archive = body.get("source"), body.get("archive")
    if (source is None) == (archive is None):
        raise InvalidSpec("give exactly one of source (Python text) or archive (base64 zip/tar.gz)")
    if source is not None:
        if not isinstance(source, str):
            raise InvalidSpec("source must be a string of Python code")
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(_entry("main.py"), source)
        code = out.getvalue()
    else:
        if not isinstance(archive, str):
            raise InvalidSpec("archive must be a base64 string")
        try:
            raw = base64.b64decode(archive, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidSpec("archive is not valid base64") from None
        code = _zip_from_archive(raw)
    if len(code) > MAX_CODE_BYTES:
        raise InvalidSpec(f"code is larger than {MAX_CODE_BYTES} bytes")
    return code


def _handler(body: dict[str, Any], code: bytes) -> str:
    # Caught here, a broken deploy is a 400 the deployer sees at once, not a
    # load error on the first call. Nothing is imported or run.
    handler = body.get("handler", "main.handle")
    if not isinstance(handler, str) or not HANDLER_RE.fullmatch(handler):
        raise InvalidSpec("handler must look like module.function, e.g. main.handle")
    module = handler.rpartition(".")[0]
    if isinstance(body.get("source"), str):
        if module != "main":
            raise InvalidSpec(
                f"handler {handler!r}: a single-file deploy is saved as main.py, "
                "so the handler must be main.<function>"
            )
        _check_compiles(body["source"])
    elif body.get("archive") is not None:
        _check_module_in_archive(handler, module, code)
    return handler


def _check_compiles(source: str) -> None:
    try:
        compile(source, "main.py", "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = "main.py" + (f", line {exc.lineno}" if exc.lineno else "")
        raise InvalidSpec(f"source does not compile: {type(exc).__name__}: {exc.msg} ({where})") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # a NUL byte, absurd nesting
        reason = ": ".join(filter(None, (type(exc).__name__, str(exc))))
        raise InvalidSpec(f"source does not compile: {reason}") from None


def _check_module_in_archive(handler: str, module: str, code: bytes) -> None:
    path = module.replace(".", "/")
    with zipfile.ZipFile(io.BytesIO(code)) as zf:
        names = {name.removeprefix("./") for name in zf.namelist()}
    if f"{path}.py" not in names and f"{path}/__init__.py" not in names:
        raise InvalidSpec(f"handler {handler!r}: the archive has neither {path}.py nor {path}/__init__.py")


def spec_from_body(name: str, body: Any, code: bytes, config: Config) -> FunctionSpec:
    if not isinstance(body, dict):
        raise InvalidSpec("the request body must be a JSON object")
    unknown = set(body) - SPEC_FIELDS
    if unknown:
        raise InvalidSpec(f"unknown field(s): {', '.join(sorted(unknown))}")
    handler = _handler(body, code)
    min_scale = _integer(body, "min_scale", 0, 0, config.max_containers)
    default_max = min(config.max_containers, max(10, min_scale))
    max_scale = _integer(body, "max_scale", default_max, 1, config.max_containers)
    if min_scale > max_scale:
        raise InvalidSpec(f"min_scale ({min_scale}) must not exceed max_scale ({max_scale})")
    secret = body.get("webhook_secret")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise InvalidSpec("webhook_secret must be a non-empty string")
    network = body.get("network", False)
    if not isinstance(network, bool):
        raise InvalidSpec("network must be true or false")
    fields = dict(
        name=validate_name(name),
        handler=handler,
        timeout_s=float(_number(body, "timeout_s", config.default_timeout_s, 0.01, config.max_timeout_s)),
        memory_mb=_integer(body, "memory_mb", config.default_memory_mb, 16, config.max_memory_mb),
        concurrency=_integer(body, "concurrency", 1, 1, 1000),
        min_scale=min_scale,
        max_scale=max_scale,
        env=_env(body),
        network=network,
        webhook_secret=secret,
        autoscale=_autoscale(body, config),
    )
    digest = hashlib.sha256(code)
    digest.update(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS))
    return FunctionSpec(**fields, version=digest.hexdigest()[:16])  # type: ignore[arg-type]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Registry:
    """Deployed functions, persisted under ``functions_dir``."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._specs: dict[str, FunctionSpec] = {}
        self._load()

    def _load(self) -> None:
        for path in sorted(self._dir.glob("*.json")):
            try:
                data = orjson.loads(path.read_bytes())
                spec = FunctionSpec(**data)
            except (ValueError, TypeError):
                continue  # unreadable record: skip rather than refuse to start
            if (self._dir / f"{spec.name}.{spec.version}.zip").exists():
                self._specs[spec.name] = spec
        for tmp in self._dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def get(self, name: str) -> FunctionSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownFunction(name) from None

    def all(self) -> list[FunctionSpec]:
        return [self._specs[name] for name in sorted(self._specs)]

    def code(self, spec: FunctionSpec) -> bytes:
        return (self._dir / f"{spec.name}.{spec.version}.zip").read_bytes()

    def put(self, spec: FunctionSpec, code: bytes) -> None:
        old = self._specs.get(spec.name)
        _write_atomic(self._dir / f"{spec.name}.{spec.version}.zip", code)
        _write_atomic(self._dir / f"{spec.name}.json", orjson.dumps(asdict(spec)))
        _fsync_dir(self._dir)
        self._specs[spec.name] = spec
        if old and old.version != spec.version:
            (self._dir / f"{old.name}.{old.version}.zip").unlink(missing_ok=True)

    def remove(self, name: str) -> FunctionSpec:
        spec = self.get(name)
        (self._dir / f"{name}.json").unlink(missing_ok=True)
        (self._dir / f"{name}.{spec.version}.zip").unlink(missing_ok=True)
        del self._specs[name]
        return spec
