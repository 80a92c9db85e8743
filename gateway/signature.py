"""HMAC-SHA256 body signatures: checking webhooks, signing callbacks."""

from __future__ import annotations

import hashlib
import hmac


def signing_key(callback_secret: str, admin_token: str) -> bytes:
    """The callback HMAC key: the configured secret, or one derived from the admin token.

    Derived rather than the token itself, so a receiver that verifies
    signatures never holds the admin token.
    """
    if callback_secret:
        return callback_secret.encode()
    return hmac.new(admin_token.encode(), b"hearth-callback-v1", hashlib.sha256).hexdigest().encode()


def sign(key: bytes, body: bytes) -> str:
    """The value of a signature header: ``sha256=<hex HMAC-SHA256 of body>``."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def signature_ok(key: bytes, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is ``sha256=<hex>`` of ``body`` under ``key``, compared in constant time."""
    if not header or not key:
        return False
    return hmac.compare_digest(sign(key, body).encode(), header.strip().lower().encode("utf-8", "replace"))
