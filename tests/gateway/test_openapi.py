"""gateway/openapi.json: a valid OpenAPI 3 document that names every route the gateway serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import make_mocked_request
from openapi_spec_validator import validate

from gateway import openapi
from gateway.app import make_app
from gateway.config import Config

SPEC: dict[str, Any] = json.loads(openapi.SPEC_PATH.read_text())
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# An any-method route (aiohttp's "*") is documented with every method OpenAPI has.
ANY_METHOD = {m.upper() for m in HTTP_METHODS}


def served_routes(tmp_path: Path) -> dict[str, set[str]]:
    app = make_app(Config.from_env({"HEARTH_ADMIN_TOKEN": "x" * 16, "HEARTH_DATA_DIR": str(tmp_path)}))
    routes: dict[str, set[str]] = {}
    for resource in app.router.resources():
        methods = {route.method for route in resource} - {"HEAD"}  # aiohttp adds HEAD to every GET
        routes[resource.canonical] = ANY_METHOD if "*" in methods else methods
    return routes


def documented_routes() -> dict[str, set[str]]:
    return {path: {m.upper() for m in item if m in HTTP_METHODS} for path, item in SPEC["paths"].items()}


def test_the_document_is_valid_openapi() -> None:
    validate(SPEC)


def test_every_route_is_documented_and_every_documented_route_served(tmp_path: Path) -> None:
    assert documented_routes() == served_routes(tmp_path)


def test_admin_routes_need_the_bearer_token_and_others_do_not() -> None:
    assert SPEC["components"]["securitySchemes"]["adminToken"] == {
        "type": "http", "scheme": "bearer", "description": "HEARTH_ADMIN_TOKEN",
    }
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                secured = op.get("security") == [{"adminToken": []}]
                assert secured == path.startswith("/system/"), (method, path)
                if secured:
                    assert "401" in op["responses"], (method, path)


def test_errors_are_documented_with_the_json_error_schema() -> None:
    error = {"$ref": "#/components/schemas/Error"}
    responses = SPEC["components"]["responses"]
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            for status, response in op.get("responses", {}).items() if method in HTTP_METHODS else ():
                if status[0] in "45":
                    body = responses[response["$ref"].rsplit("/", 1)[-1]] if "$ref" in response else response
                    assert body["content"]["application/json"]["schema"] == error, (method, path, status)


async def test_served_as_stored() -> None:
    resp = await openapi.handler(make_mocked_request("GET", "/openapi.json"))
    assert resp.status == 200 and resp.content_type == "application/json"
    assert json.loads(resp.body) == SPEC  # type: ignore[arg-type]
