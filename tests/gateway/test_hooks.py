"""Webhook deliveries: which header names one, and the dedup window (memory backend)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.hooks import BadDeliveryId, Deduper, delivery_key


def test_delivery_key_prefers_githubs_header_and_scopes_by_function() -> None:
    both = {"X-GitHub-Delivery": "gh-1", "Idempotency-Key": "ik-1"}
    assert delivery_key("fn", both) == "fn:gh-1"
    assert delivery_key("fn", {"Idempotency-Key": " ik-1 "}) == "fn:ik-1"
    assert delivery_key("other", {"Idempotency-Key": "ik-1"}) == "other:ik-1"
    assert delivery_key("fn", {}) is None
    assert delivery_key("fn", {"Idempotency-Key": "  "}) is None


def test_delivery_key_refuses_junk() -> None:
    with pytest.raises(BadDeliveryId):
        delivery_key("fn", {"Idempotency-Key": "x" * 201})
    with pytest.raises(BadDeliveryId):
        delivery_key("fn", {"Idempotency-Key": "a\x00b"})


async def test_a_repeat_within_the_window_gets_the_first_id() -> None:
    dedup = Deduper(window_s=60)
    try:
        assert await dedup.first("fn:d1", "call-a") is None
        assert await dedup.first("fn:d1", "call-b") == "call-a"
        assert await dedup.first("fn:d2", "call-c") is None
    finally:
        await dedup.close()


async def test_the_window_expires() -> None:
    dedup = Deduper(window_s=1)
    try:
        assert await dedup.first("fn:d1", "call-a") is None
        await asyncio.sleep(1.1)
        assert await dedup.first("fn:d1", "call-b") is None
    finally:
        await dedup.close()


async def test_forget_lets_a_redelivery_through_and_remember_overrides() -> None:
    dedup = Deduper(window_s=60)
    try:
        await dedup.first("fn:d1", "call-a")
        await dedup.forget("fn:d1")
        assert await dedup.first("fn:d1", "call-b") is None
        await dedup.remember("fn:d1", "call-0")
        assert await dedup.first("fn:d1", "call-c") == "call-0"
    finally:
        await dedup.close()
