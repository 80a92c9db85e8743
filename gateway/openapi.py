"""``GET /openapi.json``: the public API's OpenAPI 3 document (``gateway/openapi.json``).

The document is written by hand and checked against a live gateway by
``tests/integration/test_openapi.py`` (schemathesis); it is read once, on
the first request, and served as stored.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from aiohttp import web

SPEC_PATH = Path(__file__).with_name("openapi.json")


@cache
def spec_bytes() -> bytes:
    return SPEC_PATH.read_bytes()


async def handler(request: web.Request) -> web.Response:
    return web.Response(body=spec_bytes(), content_type="application/json")
