"""The pool: every container the pool manager owns, and the routing table built from them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from pool_manager import instances, metrics
from pool_manager.backend import BackendError, ContainerBackend
from pool_manager.config import Config
from pool_manager.instances import DRAINING, READY, STARTING, Instance, LoadFailed, StartFailed
from pool_manager.registry import FunctionSpec, Registry, UnknownFunction
from pool_manager.routing import RoutingTable
from pool_manager.scaling import Scaler

log = logging.getLogger("hearth.pool")


@dataclass(frozen=True)
class Builtin:
    """A function Hearth itself provides: its spec, code and extra load settings."""

    spec: FunctionSpec
    code: bytes
    load_meta: dict[str, Any]


class Pool:
    """Owns containers: prewarms, specializes, replaces, adopts, publishes routes."""

    def __init__(
        self, config: Config, backend: ContainerBackend, registry: Registry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        self.scaler = Scaler(config.scale_policy, config.prewarm, config.prewarm_max, config.prewarm_window_s)
        self.backend = backend
        self.registry = registry
        self.routes = RoutingTable()
        self.instances: dict[str, Instance] = {}  # by container name
        self.dropping: set[str] = set()  # being removed: not strays
        # Dropped since the current health round listed the engine's containers:
        # that list still names them, and they are not strays either.
        self.dropped: set[str] = set()
        self.load_errors: dict[str, str] = {}
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
                # The gateway verifies hook signatures itself; the table only
                # travels over the token-protected control API.
                "webhook_secret": spec.webhook_secret,
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
            await self.drop(inst)
            return
        inst.state = READY
        self._spawn(self.reconcile())

    async def _specialize(self, wanted: FunctionSpec, cold: bool = False) -> None:
        """Turn a warm generic container (or, failing that, a new one) into a function's."""
        try:
            # The spec as it is now: a deploy may have replaced the one that was decided on.
            spec = self.spec(wanted.name)
            code, load_meta = self._code(spec)
        except (UnknownFunction, OSError):
            return
        inst = self._take_generic(spec)
        fresh = inst is None
        if inst is None:
            inst = instances.new_instance(self.config, network=spec.network)
            self.instances[inst.name] = inst
        inst.function, inst.version, inst.state = spec.name, spec.version, STARTING
        inst.origin = "fresh" if fresh else "prewarmed"
        try:
            if fresh:
                await instances.start(self.config, self.backend, inst, spec.memory_mb)
            elif spec.memory_mb != self.config.default_memory_mb:
                await self.backend.set_memory(inst.id, spec.memory_mb)
            await instances.load(inst, spec, code, self.config.start_timeout_s, load_meta)
        except (StartFailed, BackendError, OSError) as exc:
            await self.drop(inst)
            self.publish()
            if not isinstance(exc, LoadFailed):
                # The container failed, not the code: the next tick tries another
                # one, and callers keep waiting rather than see a load error.
                log.warning("container for %s failed, will try another: %s", spec.name, exc)
                return
            log.warning("specializing %s failed: %s", spec.name, exc)
            self.load_errors[spec.name] = str(exc)
            self.scaler.load_failed(spec.name, self.clock())
            metrics.LOAD_FAILURES.labels(spec.name).inc()
            self.publish()
            return
        self.load_errors.pop(spec.name, None)
        self.scaler.load_succeeded(spec.name, self.clock(), cold)
        metrics.SPECIALIZATIONS.labels(spec.name, "cold" if cold else "ahead").inc()
        if inst.state == STARTING and self.instances.get(inst.name) is inst:
            inst.state = READY  # not if it was retired (redeploy, removal) while loading
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

    async def drop(self, inst: Instance) -> None:
        """Forget ``inst`` and remove its container."""
        self.instances.pop(inst.name, None)
        self.dropping.add(inst.name)
        try:
            await instances.destroy(self.backend, inst)
        except BackendError as exc:
            log.warning("removing %s failed: %s", inst.name, exc)
        finally:
            self.dropping.discard(inst.name)
            self.dropped.add(inst.name)

    async def retire(self, inst: Instance, drain_s: float = 0.0) -> None:
        """Stop routing to ``inst``, let in-flight work finish (at most ``drain_s``), remove it."""
        inst.state = DRAINING
        self.publish()
        if drain_s > 0:
            await instances.drain(inst, drain_s, self.config.health_timeout_s)
        await self.drop(inst)

    async def retire_container(self, container_id: str) -> bool:
        """Retire the ready container whose id starts with ``container_id``."""
        for inst in list(self.instances.values()):
            if inst.id.startswith(container_id) and inst.state == READY:
                spec_timeout_s = self.spec(inst.function).timeout_s if inst.function else 0.0
                inst.state = DRAINING
                self._spawn(self.retire(inst, drain_s=spec_timeout_s + 5.0))
                self._spawn(self.reconcile())
                return True
        return False

    # -- decisions ---------------------------------------------------------

    def _budget(self, name: str) -> int:
        others = sum(1 for i in self.instances.values() if i.function not in (None, name))
        return self.config.max_containers - others

    async def reconcile(self) -> None:
        """Bring each function to its autoscaler decision, and the prewarm pool to size."""
        async with self._lock:
            now = self.clock()
            for spec in self.specs():
                current = self.of_function(spec.name)
                ready = sum(1 for i in current if i.state == READY)
                before = self.scaler.describe(spec.name)["desired"]
                decision = self.scaler.decide(spec, ready, self._budget(spec.name), now)
                if before is not None and decision.desired != before:
                    direction = "up" if decision.desired > before else "down"
                    metrics.SCALING_DECISIONS.labels(spec.name, direction).inc()
                    log.info("scale %s %s: %d -> %d (%s)", spec.name, direction, before,
                             decision.desired, decision.reason)
                missing = decision.desired - len(current)
                if missing > 0 and self.scaler.may_load(spec.name, now):
                    cold = self.scaler.waiting(spec.name, ready * spec.concurrency)
                    for _ in range(min(missing, self._room() + len(self.generics()))):
                        self._spawn(self._specialize(spec, cold))
                        await asyncio.sleep(0)  # let it claim its generic container
                elif missing < 0:
                    self._scale_down(spec, current, -missing)
            self._size_prewarm(self.scaler.prewarm_wanted(now))
            self.publish()

    def _size_prewarm(self, wanted: int) -> None:
        spare = len(self.generics((STARTING, READY)))
        for _ in range(max(0, min(wanted - spare, self._room()))):
            self._spawn(self._start_generic())
        # A burst of cold starts grew the pool; once it has aged out of the
        # window, the spares it left would hold memory and budget for good.
        for inst in sorted(self.generics(), key=lambda i: i.created_at)[: max(0, spare - wanted)]:
            inst.state = DRAINING  # not READY: nobody may claim it now
            log.info("retiring spare generic container %s (%d wanted)", inst.name, wanted)
            self._spawn(self.drop(inst))

    def _scale_down(self, spec: FunctionSpec, current: list[Instance], excess: int) -> None:
        # Only ready containers are retired; ones still starting finish first.
        victims = sorted((i for i in current if i.state == READY), key=lambda i: i.created_at)[-excess:]
        for inst in victims:
            inst.state = DRAINING
            self._spawn(self.retire(inst, drain_s=spec.timeout_s + 5.0))

    async def report_demand(self, load: dict[str, float]) -> None:
        """A gateway load report: concurrency per function (in flight plus queued)."""
        names = [spec.name for spec in self.specs()]
        self.scaler.record(names, load, self.clock())
        await self.reconcile()

    # -- functions ---------------------------------------------------------

    async def deployed(self, spec: FunctionSpec, previous: FunctionSpec | None) -> None:
        self.load_errors.pop(spec.name, None)
        self.scaler.reset_backoff(spec.name)  # new code deserves a fresh try
        if previous is not None and previous.version != spec.version:
            old = [i for i in self.of_function(spec.name) if i.version != spec.version]
            for inst in old:
                inst.state = DRAINING
                self._spawn(self.retire(inst, drain_s=previous.timeout_s + 5.0))
            # Replace like for like, so an update does not send callers to cold starts.
            for _ in range(min(len(old), spec.max_scale)):
                self._spawn(self._specialize(spec))
                await asyncio.sleep(0)
        await self.reconcile()

    async def removed(self, name: str) -> None:
        self.load_errors.pop(name, None)
        self.scaler.forget(name)
        victims = [i for i in self.instances.values() if i.function == name]
        self.publish()
        await asyncio.gather(*(self.drop(i) for i in victims))

    async def shutdown(self, remove: bool) -> None:
        for task in list(self._tasks):
            task.cancel()
        if remove:
            await asyncio.gather(*(self.drop(i) for i in list(self.instances.values())))

    def status(self) -> dict[str, Any]:
        return {
            "generic": {
                "ready": len(self.generics()),
                "starting": len(self.generics((STARTING,))),
                "wanted": self.scaler.prewarm_wanted(self.clock()),
            },
            "budget": self.config.max_containers,
            "containers": len(self.instances),
            "routes_version": self.routes.version,
            "time": time.time(),
        }
