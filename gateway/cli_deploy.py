"""`hearth deploy`: its options, and the JSON body it sends to PUT /system/functions/{name}."""

from __future__ import annotations

import argparse
import base64
import io
import os
import zipfile
from pathlib import Path
from typing import Any

from gateway.cli_config import CliError

_ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")

# option dest -> JSON key; only options the user gave are sent, so the
# gateway's defaults stay in one place (the gateway).
_OPTION_KEYS = {
    "handler": "handler",
    "timeout": "timeout_s",
    "memory": "memory_mb",
    "concurrency": "concurrency",
    "min_scale": "min_scale",
    "max_scale": "max_scale",
    "network": "network",
    "webhook_secret": "webhook_secret",
}


def _number(text: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return int(value) if value.is_integer() else value


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_deploy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("path", help="a .py file, a directory, or a .zip / .tar.gz archive")
    parser.add_argument("--handler", help="module.function (the gateway's default: main.handle)")
    parser.add_argument("--timeout", type=_number, metavar="SECONDS")
    parser.add_argument("--memory", type=int, metavar="MB")
    parser.add_argument("--concurrency", type=int, metavar="N", help="requests per container")
    parser.add_argument("--min-scale", type=int, metavar="N")
    parser.add_argument("--max-scale", type=int, metavar="N")
    parser.add_argument("--env", type=_env_pair, action="append", metavar="KEY=VALUE", help="repeatable")
    parser.add_argument("--network", action=argparse.BooleanOptionalAction, help="allow network access")
    parser.add_argument("--webhook-secret", metavar="S", help="HMAC secret for /hooks/NAME")


def deploy_payload(args: argparse.Namespace) -> dict[str, Any]:
    payload = code_payload(Path(args.path))
    if "source" in payload and args.handler is not None:
        check_single_file_handler(args.handler)
    for dest, key in _OPTION_KEYS.items():
        value = getattr(args, dest)
        if value is not None:
            payload[key] = value
    if args.env:
        payload["env"] = dict(args.env)
    return payload


def check_single_file_handler(handler: str) -> None:
    # The gateway would refuse it too, but only after the upload; say it before.
    if handler.rpartition(".")[0] != "main":
        raise CliError(
            f"handler {handler!r}: a single-file deploy is saved as main.py,"
            " use --handler main.<function> (or deploy a directory)",
            2,
        )


def code_payload(path: Path) -> dict[str, Any]:
    """{"source": text} for one .py file, {"archive": base64} for anything bigger."""
    try:
        if path.is_dir():
            return {"archive": _b64(zip_directory(path))}
        if path.name.endswith(_ARCHIVE_SUFFIXES):
            return {"archive": _b64(path.read_bytes())}
        if path.suffix == ".py":
            return {"source": path.read_text(encoding="utf-8")}
    except FileNotFoundError:
        raise CliError(f"{path} does not exist", 2) from None
    except OSError as err:
        raise CliError(f"cannot read {path}: {err.strerror}", 2) from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text", 2) from None
    if not path.exists():
        raise CliError(f"{path} does not exist", 2)
    raise CliError(f"{path}: expected a .py file, a directory, a .zip or a .tar.gz", 2)


def zip_directory(root: Path) -> bytes:
    """Zip `root`'s files by relative path, leaving out caches and dotfiles."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for dirpath, dirnames, filenames in os.walk(root):
            # Pruning in place keeps os.walk out of .git, .venv and __pycache__.
            dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
            for filename in sorted(f for f in filenames if not _skipped(f)):
                full = Path(dirpath, filename)
                if full.is_file():  # a FIFO or socket would hang or fail the read
                    archive.write(full, full.relative_to(root).as_posix())
    return buffer.getvalue()


def _skipped(name: str) -> bool:
    return name.startswith(".") or name == "__pycache__"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
