"""Bad input of each kind gets a clear JSON 4xx from the real gateway."""

from __future__ import annotations

import json

import pytest

from tests.integration.stack import Stack

pytestmark = pytest.mark.docker


def error_of(body: bytes) -> dict[str, str]:
    error = json.loads(body)["error"]
    assert error["code"] and error["message"]
    return error


def test_unknown_function_is_404(stack: Stack) -> None:
    status, _, body = stack.request("GET", "/function/does-not-exist")
    assert status == 404
    assert error_of(body)["code"] == "function_not_found"


@pytest.mark.parametrize("name", ["Bad", "-x", "a_b", "x" * 64])
def test_bad_names_are_400(stack: Stack, name: str) -> None:
    status, _, body = stack.request("GET", f"/function/{name}")
    assert status == 400, body
    status, _, body = stack.request("PUT", f"/system/functions/{name}", {"source": "x"}, admin=True)
    assert status == 400, body
    assert "name" in error_of(body)["message"]


def test_missing_or_wrong_token_is_401(stack: Stack) -> None:
    status, _, body = stack.request("GET", "/system/functions")
    assert status == 401
    assert error_of(body)["code"] == "unauthorized"
    stack_token, stack.token = stack.token, "wrong-token"
    try:
        status, _, _ = stack.request("GET", "/system/functions", admin=True)
    finally:
        stack.token = stack_token
    assert status == 401


def test_malformed_json_is_400(stack: Stack) -> None:
    status, _, body = stack.request("PUT", "/system/functions/broken", b"{not json", admin=True)
    assert status == 400
    assert "JSON" in error_of(body)["message"]


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({}, "source"),
        ({"source": "x", "archive": "eA=="}, "source"),
        ({"source": "x", "timeout_s": -1}, "timeout_s"),
        ({"source": "x", "concurrency": "two"}, "concurrency"),
        ({"source": "x", "min_scale": 3, "max_scale": 2}, "min_scale"),
        ({"source": "x", "handler": "no-dots"}, "handler"),
        ({"source": "x", "colour": "red"}, "colour"),
        ({"archive": "not base64!"}, "base64"),
    ],
)
def test_invalid_deploys_are_400_and_say_why(stack: Stack, payload: dict[str, object], words: str) -> None:
    status, _, body = stack.request("PUT", "/system/functions/invalid", payload, admin=True)
    assert status == 400, body
    assert words in error_of(body)["message"]


def test_oversized_body_is_413(stack: Stack) -> None:
    stack.deploy("sink", "def handle(event, context):\n    return len(event.body)\n")
    status, _, body = stack.request("POST", "/function/sink", b"x" * (7 << 20))
    assert status == 413
    assert error_of(body)["code"] == "payload_too_large"


def test_remove_then_invoke_is_404(stack: Stack) -> None:
    stack.deploy("brief", "def handle(event, context):\n    return 'hi'\n")
    assert stack.request("GET", "/function/brief")[0] == 200
    status, _, _ = stack.request("DELETE", "/system/functions/brief", admin=True)
    assert status == 200
    assert stack.request("GET", "/function/brief")[0] == 404
    status, _, body = stack.request("GET", "/system/functions/brief", admin=True)
    assert status == 404
    assert error_of(body)["code"] == "function_not_found"
