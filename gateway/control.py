"""The gateway's client of the pool manager's control API."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson

log = logging.getLogger("hearth.gateway.control")


class ControlUnavailable(Exception):
    """The pool manager did not answer."""


class ControlClient:
    """Token-carrying calls to the pool manager; one session for all of them."""

    def __init__(self, base_url: str, token: str) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers, json_serialize=lambda o: orjson.dumps(o).decode()
            )
        return self._session

    async def forward(
        self, method: str, path: str, body: bytes | None, timeout_s: float = 60.0
    ) -> tuple[int, bytes, str]:
        """Relay an admin call; returns status, body and content type."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            async with self._client().request(
                method, self._base + path, data=body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                return resp.status, await resp.read(), resp.content_type
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ControlUnavailable(f"pool manager at {self._base} does not answer: {exc}") from exc

    async def routes(self, after: int, timeout_s: float) -> dict[str, Any]:
        try:
            async with self._client().get(
                f"{self._base}/v1/routes", params={"after": str(after)},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                if resp.status != 200:
                    raise ControlUnavailable(f"routes answered {resp.status}")
                data = orjson.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise ControlUnavailable(str(exc)) from exc
        if not isinstance(data, dict):
            raise ControlUnavailable("routes answer is not an object")
        return data

    async def post(self, path: str, payload: Any, timeout_s: float = 5.0) -> None:
        """Fire a report; failures are logged, never raised (reports are advisory)."""
        try:
            async with self._client().post(
                self._base + path, data=orjson.dumps(payload),
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("report to %s failed: %s", path, exc)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            await asyncio.sleep(0)
