"""Webhook deliveries: which header names a delivery, and remembering the ones seen.

Senders redeliver (GitHub on request, Stripe on a timeout), so a delivery id
seen within the window answers with the first call's id instead of running
again. The window lives in aiocache: process memory by default, Redis when
HEARTH_DEDUP_REDIS_URL is set, so several gateways share it. The durable
call store keeps its own unique key too, which covers a gateway restart
that emptied the memory cache.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiocache import Cache

log = logging.getLogger("hearth.gateway.hooks")
DELIVERY_HEADERS = ("X-GitHub-Delivery", "Idempotency-Key")
MAX_DELIVERY_ID_CHARS = 200


class BadDeliveryId(ValueError):
    """A delivery id header that cannot be a key."""


def delivery_key(function: str, headers: Mapping[str, str]) -> str | None:
    """The dedup key of a request, or None when it names no delivery."""
    for name in DELIVERY_HEADERS:
        value = headers.get(name, "").strip()
        if value:
            if len(value) > MAX_DELIVERY_ID_CHARS or not value.isprintable():
                raise BadDeliveryId(f"{name} must be at most {MAX_DELIVERY_ID_CHARS} printable characters")
            return f"{function}:{value}"
    return None


class Deduper:
    """Delivery key -> first call id, for a window of seconds."""

    def __init__(self, window_s: int, redis_url: str = "") -> None:
        self.window_s = window_s
        self.cache = Cache.from_url(redis_url) if redis_url else Cache(Cache.MEMORY)

    async def first(self, key: str, call_id: str) -> str | None:
        """Record ``call_id`` for ``key``; if ``key`` was seen, return that call's id instead."""
        try:
            try:
                await self.cache.add(key, call_id, ttl=self.window_s, namespace="hearth-dedup")
            except ValueError:  # aiocache's "key exists"
                seen = await self.cache.get(key, namespace="hearth-dedup")
                return str(seen) if seen is not None else None
        except Exception as exc:
            # A shared cache that is down must not stop deliveries: the
            # store's unique key still catches repeats at this gateway.
            log.warning("dedup cache failed, relying on the call store: %s", exc)
        return None

    async def remember(self, key: str, call_id: str) -> None:
        try:
            await self.cache.set(key, call_id, ttl=self.window_s, namespace="hearth-dedup")
        except Exception as exc:  # best effort, as in first()
            log.warning("dedup cache failed: %s", exc)

    async def forget(self, key: str) -> None:
        """Drop a key whose call was not stored after all, so a redelivery is not lost."""
        try:
            await self.cache.delete(key, namespace="hearth-dedup")
        except Exception as exc:  # best effort: the store's own key still guards
            log.warning("could not drop dedup key %s: %s", key, exc)

    async def close(self) -> None:
        await self.cache.close()
