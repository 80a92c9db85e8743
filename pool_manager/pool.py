"""The pool: every container the pool manager owns, and the routing table built from them."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from pool_manager import instances
from pool_manager.backend import BackendError, ContainerBackend
from pool_manager.config import Config
from pool_manager.instances import DRAINING, READY, STARTING, Instance, StartFailed
from pool_manager.registry import FunctionSpec, Registry, UnknownFunction
from pool_manager.routing import RoutingTable

log = logging.getLogger("hearth.pool")


@dataclass(frozen=True)
class Builtin:
    """A function Hearth itself provides: its spec, code and extra load settings."""

    spec: FunctionSpec
    code: bytes
    load_meta: dict[str, Any]


class Pool:
    """Owns containers: prewarms, specializes, replaces, adopts, publishes routes."""

    def __init__(self, config: Config, backend: ContainerBackend, registry: Registry) -> None:
        self.config = config
        self.backend = backend
        self.registry = registry
        self.routes = RoutingTable()
        self.instances: dict[str, Instance] = {}  # by container name
        self.load_errors: dict[str, str] = {}
        self.demand: dict[str, int] = {}  # function -> requests in flight or queued
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock = asyncio.Lock()
        # Functions Hearth runs for itself (the /execute sandbox): routed and
        # scaled like any other, but not in the user's registry. Their names
        # start with "_", which no user function can.
        self.builtins: dict[str, Builtin] = {}

    def add_builtin(
        self, spec: FunctionSpec, code: bytes = b"", load_meta: dict[str, Any] | None = None
    ) -> None:
        self.builtins[spec.name] = Builtin(spec, code, load_meta or {})

    def specs(self) -> list[FunctionSpec]:
        return self.registry.all() + [b.spec for b in self.builtins.values()]

    def spec(self, name: str) -> FunctionSpec:
        builtin = self.builtins.get(name)
        return builtin.spec if builtin else self.registry.get(name)

    def _code(self, spec: FunctionSpec) -> tuple[bytes, dict[str, Any]]:
        builtin = self.builtins.get(spec.name)
        if builtin is not None:
            return builtin.code, builtin.load_meta
        return self.registry.code(spec), {}

    # -- bookkeeping -------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def of_function(self, name: str, states: tuple[str, ...] = (STARTING, READY)) -> list[Instance]:
        return [i for i in self.instances.values() if i.function == name and i.state in states]

    def generics(self, states: tuple[str, ...] = (READY,)) -> list[Instance]:
        return [i for i in self.instances.values() if i.generic and i.state in states]

    def counts(self, name: str) -> dict[str, int]:
        mine = [i for i in self.instances.values() if i.function == name]
        return {s: sum(1 for i in mine if i.state == s) for s in (READY, STARTING, DRAINING)}

    def publish(self) -> None:
        table: dict[str, Any] = {}
        for spec in self.specs():
            ready = [i.route() for i in self.of_function(spec.name, (READY,)) if i.version == spec.version]
            table[spec.name] = {
                "version": spec.version,
                "concurrency": spec.concurrency,
                "timeout_s": spec.timeout_s,
                "containers": sorted(ready, key=lambda r: r["id"]),
                "load_error": self.load_errors.get(spec.name),
            }
        self.routes.publish(table)

    # -- container lifecycle ----------------------------------------------

    def _room(self) -> int:
        return self.config.max_containers - len(self.instances)

    async def _start_generic(self) -> None:
        inst = instances.new_instance(self.config)
        inst.function = None
        self.instances[inst.name] = inst
        try:
            await instances.start(self.config, self.backend, inst, self.config.default_memory_mb)
        except (StartFailed, BackendError) as exc:
            log.warning("generic container failed to start: %s", exc)
            await self._drop(inst)
            return
        inst.state = READY
        self._spawn(self.reconcile())

    async def _specialize(self, spec: FunctionSpec) -> None:
        """Turn a warm generic container (or, failing that, a new one) into ``spec``'s."""
        inst = self._take_generic(spec)
        fresh = inst is None
        if inst is None:
            inst = instances.new_instance(self.config, network=spec.network)
            self.instances[inst.name] = inst
        inst.function, inst.version, inst.state = spec.name, spec.version, STARTING
        try:
            if fresh:
                await instances.start(self.config, self.backend, inst, spec.memory_mb)
            elif spec.memory_mb != self.config.default_memory_mb:
                await self.backend.set_memory(inst.id, spec.memory_mb)
            code, load_meta = self._code(spec)
            await instances.load(inst, spec, code, self.config.start_timeout_s, load_meta)
        except (StartFailed, BackendError, OSError) as exc:
            log.warning("specializing %s failed: %s", spec.name, exc)
            self.load_errors[spec.name] = str(exc)
            await self._drop(inst)
            self.publish()
            return
        self.load_errors.pop(spec.name, None)
        inst.state = READY
        log.info("container %s serves %s", inst.name, spec.name)
        self.publish()
        self._spawn(self.reconcile())  # refill the prewarm pool

    def _take_generic(self, spec: FunctionSpec) -> Instance | None:
        if spec.network:
            return None  # generic containers have no network and cannot gain one
        for inst in self.generics():
            inst.state = STARTING  # claimed: nobody else may take it
            return inst
        return None

    async def _drop(self, inst: Instance) -> None:
        self.instances.pop(inst.name, None)
        try:
            await instances.destroy(self.backend, inst)
        except BackendError as exc:
            log.warning("removing %s failed: %s", inst.name, exc)

    async def retire(self, inst: Instance, grace_s: float = 0.0) -> None:
        """Stop routing to ``inst``, let in-flight work finish (bounded), then remove it."""
        inst.state = DRAINING
        self.publish()
        if grace_s:
            await asyncio.sleep(grace_s)
        await self._drop(inst)

    # -- decisions ---------------------------------------------------------

    def _wanted(self, spec: FunctionSpec) -> int:
        demand = self.demand.get(spec.name, 0)
        wanted = math.ceil(demand / spec.concurrency)
        if self.load_errors.get(spec.name) and not self.of_function(spec.name, (READY,)):
            wanted = min(wanted, 1)  # do not burn containers on code that fails to load
        return max(spec.min_scale, min(spec.max_scale, wanted))

    async def reconcile(self) -> None:
        """Bring container counts to what is wanted; safe to call any time."""
        async with self._lock:
            for spec in self.specs():
                missing = self._wanted(spec) - len(self.of_function(spec.name))
                for _ in range(max(0, min(missing, self._room() + len(self.generics())))):
                    self._spawn(self._specialize(spec))
                    await asyncio.sleep(0)  # let it claim its generic container
            starting = len(self.generics((STARTING, READY)))
            for _ in range(max(0, min(self.config.prewarm - starting, self._room()))):
                self._spawn(self._start_generic())
            self.publish()

    async def report_demand(self, load: dict[str, int]) -> None:
        self.demand = {name: max(0, int(n)) for name, n in load.items()}
        await self.reconcile()

    # -- functions ---------------------------------------------------------

    async def deployed(self, spec: FunctionSpec, previous: FunctionSpec | None) -> None:
        self.load_errors.pop(spec.name, None)
        if previous is not None and previous.version != spec.version:
            old = [
                i for i in self.instances.values() if i.function == spec.name and i.version != spec.version
            ]
            grace_s = min(previous.timeout_s, 30.0) + 1.0
            for inst in old:
                self._spawn(self.retire(inst, grace_s))
            # Keep as many containers as served the old version.
            self.demand[spec.name] = max(self.demand.get(spec.name, 0), len(old) * spec.concurrency)
        await self.reconcile()

    async def removed(self, name: str) -> None:
        self.demand.pop(name, None)
        self.load_errors.pop(name, None)
        victims = [i for i in self.instances.values() if i.function == name]
        self.publish()
        await asyncio.gather(*(self._drop(i) for i in victims))

    # -- health and adoption -------------------------------------------------

    async def adopt(self) -> None:
        """Take over the containers a previous pool manager left; remove the rest."""
        found = await self.backend.list(self.config.pool_id)
        keep = await asyncio.gather(*(self._adopt_one(info.id, info.name, info.running) for info in found))
        log.info("adopted %d of %d containers", sum(keep), len(found))
        self.publish()

    async def _adopt_one(self, container_id: str, name: str, running: bool) -> bool:
        inst = Instance(name=name, socket_dir=instances.socket_dir(self.config, name), id=container_id)
        answer = await instances.health(inst, self.config.health_timeout_s) if running else None
        try:
            spec = self.spec(answer["function"]) if answer and answer.get("function") else None
        except UnknownFunction:
            spec = None
        usable = answer is not None and (
            answer.get("function") is None or (spec is not None and answer.get("version") == spec.version)
        )
        if not usable:
            await instances.destroy(self.backend, inst)
            return False
        assert answer is not None
        inst.function, inst.version, inst.state = answer.get("function"), answer.get("version"), READY
        self.instances[name] = inst
        return True

    async def check_health(self) -> None:
        """Replace containers that are gone, stopped or not answering their runtime."""
        try:
            listed = {c.name: c for c in await self.backend.list(self.config.pool_id)}
        except BackendError as exc:
            log.warning("engine does not answer: %s", exc)
            return
        ready = [i for i in self.instances.values() if i.state == READY]
        answers = await asyncio.gather(*(instances.health(i, self.config.health_timeout_s) for i in ready))
        changed = False
        for inst, answer in zip(ready, answers, strict=True):
            info = listed.get(inst.name)
            inst.health_failures = 0 if answer else inst.health_failures + 1
            if info is None or not info.running or inst.health_failures >= 2:
                log.warning("replacing unhealthy container %s (%s)", inst.name, inst.function or "generic")
                await self._drop(inst)
                changed = True
        await self._remove_strays(listed)
        if changed:
            self.publish()
            await self.reconcile()

    async def _remove_strays(self, listed: dict[str, Any]) -> None:
        for name, info in listed.items():
            if name not in self.instances:
                log.warning("removing stray container %s", name)
                await self.backend.remove(info.id)

    async def suspect(self, container_id: str) -> None:
        """The gateway's breaker opened on this container: check it now."""
        for inst in list(self.instances.values()):
            if inst.id.startswith(container_id) and inst.state == READY:
                if await instances.health(inst, self.config.health_timeout_s) is None:
                    await self._drop(inst)
                    self.publish()
                    await self.reconcile()
                return

    async def health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            try:
                await self.check_health()
                await self.reconcile()
            except Exception:  # the loop must survive anything one round hits
                log.exception("health round failed")

    async def shutdown(self, remove: bool) -> None:
        for task in list(self._tasks):
            task.cancel()
        if remove:
            await asyncio.gather(*(self._drop(i) for i in list(self.instances.values())))

    def status(self) -> dict[str, Any]:
        return {
            "generic": {"ready": len(self.generics()), "starting": len(self.generics((STARTING,)))},
            "containers": len(self.instances),
            "routes_version": self.routes.version,
            "time": time.time(),
        }
