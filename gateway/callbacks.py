"""Callbacks: where results may go, how they are signed, when a failed delivery is retried."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterable, Sequence

import aiohttp

MAX_URL_CHARS = 2048
# The result's headers go along with it (as OpenFaaS's queue worker does),
# except those that describe one hop rather than the answer, and those
# Hearth sets itself, which a function must not be able to forge.
NOT_RELAYED = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
    "proxy-authorization", "proxy-authenticate", "content-length", "host",
    "x-call-id", "x-function-name", "x-function-status", "x-hearth-signature",
})


class BadCallbackUrl(ValueError):
    """An X-Callback-Url Hearth will not post to; the message says why."""


def check_callback_url(url: str, allowed_hosts: frozenset[str] = frozenset()) -> str:
    """``url`` if it is an absolute http(s) URL to an allowed host."""
    if len(url) > MAX_URL_CHARS:
        raise BadCallbackUrl(f"X-Callback-Url is longer than {MAX_URL_CHARS} characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise BadCallbackUrl("X-Callback-Url must not contain spaces or control characters")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BadCallbackUrl("X-Callback-Url must be an http:// or https:// URL")
    try:
        host, _port = parts.hostname, parts.port  # .port raises on a bad port
    except ValueError as exc:
        raise BadCallbackUrl(f"X-Callback-Url has a bad port: {exc}") from None
    if not host:
        raise BadCallbackUrl("X-Callback-Url has no host")
    if allowed_hosts and host.lower() not in allowed_hosts:
        raise BadCallbackUrl(f"callbacks to {host!r} are not allowed here (HEARTH_CALLBACK_HOSTS)")
    return url


def backoff_s(attempt: int, base_s: float, cap_s: float, rand: Callable[[], float]) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, full jitter.

    Full jitter (a uniform draw below the exponential ceiling) spreads the
    retries of many calls that failed together, so a receiver that comes
    back is not hit by all of them at once.
    """
    ceiling_s = min(cap_s, base_s * 2.0 ** min(max(attempt - 1, 0), 62))
    return rand() * ceiling_s


def callback_headers(
    call_id: str, function: str, status: int, result_headers: Iterable[Sequence[str]], signature: str
) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in result_headers:
        if key.lower() not in NOT_RELAYED:
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
    headers.update({
        "X-Call-Id": call_id,
        "X-Function-Name": function,
        "X-Function-Status": str(status),
        "X-Hearth-Signature": signature,
    })
    return headers


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], timeout_s: float
) -> str | None:
    """POST a result; None when the receiver took it (2xx), else why not."""
    try:
        async with session.post(
            url, data=body, headers=headers, allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            await resp.read()
            if 200 <= resp.status < 300:
                return None
            return f"receiver answered {resp.status}"
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
