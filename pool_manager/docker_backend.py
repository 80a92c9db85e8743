"""The Docker engine behind ``ContainerBackend``: the only module that imports docker.

docker-py is synchronous, so every call goes through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from pool_manager.backend import (
    LABEL_MANAGED,
    LABEL_POOL,
    BackendError,
    ContainerInfo,
    ContainerSpec,
)
from runtime.protocol import CONTAINER_SOCKET_DIR

# The runtime runs as "nobody": it needs no account in the image.
CONTAINER_USER = "65534:65534"


def _info(container: Any) -> ContainerInfo:
    return ContainerInfo(
        id=container.id,
        name=container.name,
        running=container.status == "running",
        labels=dict(container.labels or {}),
    )


def run_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """The safe defaults of DESIGN.md, as docker-py ``containers.run`` arguments."""
    memory = f"{spec.memory_mb}m"
    return {
        "image": spec.image,
        "name": spec.name,
        "detach": True,
        "user": CONTAINER_USER,
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={spec.tmpfs_mb}m,mode=1777"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "pids_limit": spec.pids_limit,
        "mem_limit": memory,
        "memswap_limit": memory,  # swap equal to memory: no swap at all
        "nano_cpus": int(spec.cpus * 1e9),
        "network_mode": "bridge" if spec.network else "none",
        "volumes": {str(spec.socket_dir): {"bind": CONTAINER_SOCKET_DIR, "mode": "rw"}},
        "labels": {**spec.labels, LABEL_MANAGED: "true"},
        "environment": {"HEARTH_SOCKET": f"{CONTAINER_SOCKET_DIR}/runtime.sock"},
        "init": False,
        "auto_remove": False,
    }


class DockerBackend:
    """Containers on a local Docker engine."""

    def __init__(self, client: Any | None = None) -> None:
        self._client = client

    def _docker(self) -> Any:
        # Created lazily and re-created after an engine restart (see ping).
        if self._client is None:
            try:
                self._client = docker.from_env(timeout=30)
            except DockerException as exc:
                raise BackendError(f"no Docker engine answers: {exc}") from exc
        return self._client

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except NotFound:
            raise
        except (DockerException, OSError) as exc:
            raise BackendError(str(exc)) from exc

    async def ping(self) -> None:
        try:
            await self._call(lambda: self._docker().ping())
        except BackendError:
            self._client = None
            raise

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        try:
            container = await self._call(lambda: self._docker().containers.run(**run_kwargs(spec)))
        except ImageNotFound as exc:
            raise BackendError(f"image {spec.image} not found: build it with scripts/image.sh") from exc
        except NotFound as exc:
            raise BackendError(str(exc)) from exc
        return _info(container)

    async def set_memory(self, container_id: str, memory_mb: int) -> None:
        memory = f"{memory_mb}m"

        def update() -> None:
            self._docker().api.update_container(container_id, mem_limit=memory, memswap_limit=memory)

        try:
            await self._call(update)
        except NotFound as exc:
            raise BackendError(str(exc)) from exc

    async def remove(self, container_id: str) -> None:
        try:
            await self._call(lambda: self._docker().api.remove_container(container_id, force=True))
        except NotFound:
            return
        except BackendError as exc:
            if "already in progress" in str(exc):
                return
            raise

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        try:
            container = await self._call(lambda: self._docker().containers.get(container_id))
        except NotFound:
            return None
        return _info(container)

    async def list(self, pool_id: str) -> list[ContainerInfo]:
        filters = {"label": [f"{LABEL_MANAGED}=true", f"{LABEL_POOL}={pool_id}"]}
        containers = await self._call(
            lambda: self._docker().containers.list(all=True, filters=filters, ignore_removed=True)
        )
        return [_info(c) for c in containers]

    async def logs(self, container_id: str, tail: int) -> bytes:
        try:
            data = await self._call(
                lambda: self._docker().api.logs(container_id, tail=tail, timestamps=False)
            )
        except NotFound:
            return b""
        return bytes(data)


__all__ = ["APIError", "DockerBackend", "run_kwargs"]
