"""Keeping containers honest: adoption after a restart, health rounds, strays, suspects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from pool_manager import instances, metrics
from pool_manager.backend import BackendError
from pool_manager.instances import READY, Instance
from pool_manager.pool import Pool
from pool_manager.registry import UnknownFunction

log = logging.getLogger("hearth.health")
# Consecutive failed runtime checks before a running container is replaced:
# one slow answer under load is not a dead container.
MAX_HEALTH_FAILURES = 2


async def adopt(pool: Pool) -> None:
    """Take over the containers a previous pool manager left; remove the rest."""
    found = await pool.backend.list(pool.config.pool_id)
    keep = await asyncio.gather(*(_adopt_one(pool, info.id, info.name, info.running) for info in found))
    log.info("adopted %d of %d containers", sum(keep), len(found))
    pool.publish()


async def _adopt_one(pool: Pool, container_id: str, name: str, running: bool) -> bool:
    inst = Instance(name=name, socket_dir=instances.socket_dir(pool.config, name), id=container_id)
    answer = await instances.health(inst, pool.config.health_timeout_s) if running else None
    function = answer.get("function") if answer else None
    try:
        spec = pool.spec(function) if function else None
    except UnknownFunction:
        spec = None
    usable = answer is not None and (
        function is None or (spec is not None and answer.get("version") == spec.version)
    )
    if not usable:
        await instances.destroy(pool.backend, inst)
        return False
    assert answer is not None
    inst.function, inst.version, inst.state = function, answer.get("version"), READY
    pool.instances[name] = inst
    return True


async def check(pool: Pool) -> None:
    """Replace containers that are gone, stopped or not answering their runtime."""
    pool.dropped.clear()
    try:
        listed = {c.name: c for c in await pool.backend.list(pool.config.pool_id)}
    except BackendError as exc:
        log.warning("engine does not answer: %s", exc)
        with contextlib.suppress(BackendError):
            await pool.backend.ping()  # reconnects once the engine is back
        return
    ready = [i for i in pool.instances.values() if i.state == READY]
    answers = await asyncio.gather(*(instances.health(i, pool.config.health_timeout_s) for i in ready))
    changed = False
    for inst, answer in zip(ready, answers, strict=True):
        info = listed.get(inst.name)
        inst.health_failures = 0 if answer else inst.health_failures + 1
        reason = _unhealthy(info, inst)
        if reason:
            log.warning("replacing container %s (%s): %s", inst.name, inst.function or "generic", reason)
            metrics.REPLACEMENTS.labels(reason).inc()
            await pool.drop(inst)
            changed = True
    await _remove_strays(pool, listed)
    if changed:
        pool.publish()
        await pool.reconcile()


def _unhealthy(info: Any, inst: Instance) -> str | None:
    if info is None:
        return "gone"
    if not info.running:
        return "stopped"
    if inst.health_failures >= MAX_HEALTH_FAILURES:
        return "unresponsive"
    return None


async def _remove_strays(pool: Pool, listed: dict[str, Any]) -> None:
    for name, info in listed.items():
        if name not in pool.instances and name not in pool.dropping and name not in pool.dropped:
            log.warning("removing stray container %s", name)
            await pool.backend.remove(info.id)


async def suspect(pool: Pool, container_id: str) -> None:
    """The gateway's breaker opened on this container: check it now."""
    for inst in list(pool.instances.values()):
        if inst.id.startswith(container_id) and inst.state == READY:
            if await instances.health(inst, pool.config.health_timeout_s) is None:
                metrics.REPLACEMENTS.labels("breaker").inc()
                await pool.drop(inst)
                pool.publish()
                await pool.reconcile()
            return


async def loop(pool: Pool) -> None:
    """Health rounds and autoscaler ticks, forever; one bad round never stops them."""
    health_every = max(1, round(pool.config.health_interval_s / pool.config.autoscale_tick_s))
    tick = 0
    while True:
        await asyncio.sleep(pool.config.autoscale_tick_s)
        tick += 1
        try:
            if tick % health_every == 0:
                await check(pool)
            await pool.reconcile()
        except Exception:
            log.exception("pool round failed")
