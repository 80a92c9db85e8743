"""One container and the steps of its life: start, specialize, health, removal."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth.runtime_client import RuntimeBroken, RuntimeUnavailable, call_once
from pool_manager.backend import LABEL_POOL, LABEL_ROLE, ContainerBackend, ContainerSpec
from pool_manager.config import Config
from pool_manager.registry import FunctionSpec
from runtime.protocol import SOCKET_NAME

STARTING, READY, DRAINING = "starting", "ready", "draining"


class StartFailed(Exception):
    """A container did not come up or could not be reached: the container's fault."""


class LoadFailed(StartFailed):
    """The function's code did not load (or killed the runtime loading it): the code's fault."""


@dataclass
class Instance:
    """A container the pool owns: generic until specialized to one function."""

    name: str
    socket_dir: Path
    id: str = ""
    function: str | None = None
    version: str | None = None
    state: str = STARTING
    network: bool = False
    created_at: float = field(default_factory=time.monotonic)
    health_failures: int = 0
    origin: str = "fresh"  # "prewarmed" when a generic container was specialized

    @property
    def socket_path(self) -> str:
        return str(self.socket_dir / SOCKET_NAME)

    @property
    def generic(self) -> bool:
        return self.function is None

    def route(self) -> dict[str, Any]:
        return {"id": self.id[:12], "socket": self.socket_path, "origin": self.origin}


def socket_dir(config: Config, name: str) -> Path:
    # Only the name's random tail: the whole path must stay under 108 bytes.
    return config.sockets_dir / name.rsplit("-", 1)[-1]


def new_instance(config: Config, network: bool = False) -> Instance:
    name = f"hearth-{config.pool_id}-{secrets.token_hex(4)}"
    return Instance(name=name, socket_dir=socket_dir(config, name), network=network)


async def start(config: Config, backend: ContainerBackend, inst: Instance, memory_mb: int) -> None:
    """Create the container and wait until its runtime answers."""
    inst.socket_dir.mkdir(parents=True, exist_ok=True)
    # The runtime runs as nobody and must create its socket here.
    os.chmod(inst.socket_dir, 0o777)
    spec = ContainerSpec(
        name=inst.name,
        image=config.image,
        socket_dir=inst.socket_dir,
        memory_mb=memory_mb,
        cpus=config.cpus,
        pids_limit=config.pids_limit,
        tmpfs_mb=config.tmpfs_mb,
        network=inst.network,
        labels={LABEL_POOL: config.pool_id, LABEL_ROLE: "function"},
    )
    info = await backend.create(spec)
    inst.id = info.id
    await wait_ready(inst, config.start_timeout_s)


async def wait_ready(inst: Instance, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    delay_s = 0.005
    while time.monotonic() < deadline:
        try:
            meta, _ = await call_once(inst.socket_path, {"op": "health"}, timeout_s=1.0)
            if meta.get("ok"):
                return
        except (RuntimeUnavailable, RuntimeBroken):
            pass
        await asyncio.sleep(delay_s)
        delay_s = min(delay_s * 1.5, 0.1)
    raise StartFailed(f"container {inst.name} did not answer within {timeout_s:g} s")


async def load(
    inst: Instance, spec: FunctionSpec, code: bytes, timeout_s: float, extra: dict[str, Any] | None = None
) -> None:
    """Specialize: send the function's code to the runtime, which imports it once."""
    meta = {
        "op": "load",
        "function": spec.name,
        "version": spec.version,
        "handler": spec.handler,
        "env": spec.env,
        "concurrency": spec.concurrency,
        "timeout_s": spec.timeout_s,
        **(extra or {}),
    }
    try:
        answer, _ = await call_once(inst.socket_path, meta, code, timeout_s=timeout_s)
    except RuntimeUnavailable as exc:
        # Never reached the runtime: a dead container, not bad code.
        raise StartFailed(f"load of {spec.name} into {inst.name} failed: {exc}") from exc
    except RuntimeBroken as exc:
        # The runtime took the code and then died or hung: the code did it
        # (e.g. os._exit at import time), so it counts against the function.
        raise LoadFailed(f"the code killed the runtime while loading: {exc}") from exc
    if not answer.get("ok"):
        # No name here: the gateway's error and the pool's log line name the function.
        error = answer.get("error") or {}
        raise LoadFailed(str(error.get("message", answer)))
    inst.function, inst.version = spec.name, spec.version


async def health(inst: Instance, timeout_s: float) -> dict[str, Any] | None:
    """The runtime's own health answer, or None when it does not answer."""
    try:
        meta, _ = await call_once(inst.socket_path, {"op": "health"}, timeout_s=timeout_s)
    except (RuntimeUnavailable, RuntimeBroken):
        return None
    return meta if meta.get("ok") else None


async def destroy(backend: ContainerBackend, inst: Instance) -> None:
    await backend.remove(inst.id or inst.name)
    shutil.rmtree(inst.socket_dir, ignore_errors=True)


async def drain(inst: Instance, drain_s: float, health_timeout_s: float) -> None:
    """Wait until the runtime has nothing in flight (or ``drain_s`` passed).

    The gateway stops routing to a draining container once it sees the new
    routing table, a moment after it is published: wait that moment first.
    """
    deadline = time.monotonic() + drain_s
    await asyncio.sleep(0.3)
    while time.monotonic() < deadline:
        answer = await health(inst, health_timeout_s)
        if answer is None or not answer.get("busy"):
            return
        await asyncio.sleep(0.1)
