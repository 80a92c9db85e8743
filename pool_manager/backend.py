"""The seam between the pool and the container engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

LABEL_MANAGED = "hearth.managed"
LABEL_POOL = "hearth.pool"
LABEL_ROLE = "hearth.role"


class BackendError(Exception):
    """The container engine refused or failed an operation."""


@dataclass(frozen=True)
class ContainerSpec:
    """What a new container needs; the safe defaults are the backend's job."""

    name: str
    image: str
    socket_dir: Path
    memory_mb: int
    cpus: float
    pids_limit: int
    tmpfs_mb: int
    network: bool = False
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerInfo:
    """A container as the engine reports it."""

    id: str
    name: str
    running: bool
    labels: dict[str, str] = field(default_factory=dict)


class ContainerBackend(Protocol):
    """The few engine operations the pool needs."""

    async def ping(self) -> None: ...

    async def create(self, spec: ContainerSpec) -> ContainerInfo: ...

    async def set_memory(self, container_id: str, memory_mb: int) -> None: ...

    async def remove(self, container_id: str) -> None: ...

    async def inspect(self, container_id: str) -> ContainerInfo | None: ...

    async def list(self, pool_id: str) -> list[ContainerInfo]: ...

    async def logs(self, container_id: str, tail: int) -> bytes: ...
