"""Deploy and invoke through the gateway, on real containers."""

from __future__ import annotations

import asyncio
import collections
import json
import textwrap

import aiohttp
import pytest

from tests.integration.stack import Stack

pytestmark = pytest.mark.docker

ECHO = textwrap.dedent(
    """
    import os

    def handle(event, context):
        return {
            "method": event.method,
            "path": event.path,
            "query": event.query,
            "header": event.headers.get("x-test"),
            "body": event.text,
            "function": context.function_name,
            "request_id": context.request_id,
            "pid": os.getpid(),
        }
    """
)


def test_deploy_then_invoke_echoes_the_request(stack: Stack) -> None:
    info = stack.deploy("echo", ECHO)
    assert info["name"] == "echo" and info["handler"] == "main.handle"
    req_status, headers, body = stack.request("POST", "/function/echo/a/b?x=1&y=2", b"hello")
    assert req_status == 200, body
    data = json.loads(body)
    assert data["method"] == "POST"
    assert data["path"] == "/a/b"
    assert data["query"] == {"x": "1", "y": "2"}
    assert data["body"] == "hello"
    assert data["function"] == "echo"
    assert data["request_id"] == headers["X-Request-Id"]
    assert headers["X-Hearth-Container"]
    assert headers["X-Hearth-Start"] in ("cold", "warm")
    status2, headers2, _ = stack.request("GET", "/function/echo")
    assert status2 == 200
    assert headers2["X-Hearth-Start"] == "warm"


def test_handler_controls_the_whole_response(stack: Stack) -> None:
    stack.deploy("teapot", textwrap.dedent(
        """
        async def handle(event, context):
            return {"status": 418, "headers": {"X-Brew": "earl-grey"}, "body": "short and stout"}
        """
    ))
    status, headers, body = stack.request("GET", "/function/teapot")
    assert status == 418
    assert headers["X-Brew"] == "earl-grey"
    assert body == b"short and stout"


def test_handler_error_is_a_500_naming_the_exception(stack: Stack) -> None:
    stack.deploy("raiser", "def handle(event, context):\n    raise ValueError('no thanks')\n")
    status, _, body = stack.request("GET", "/function/raiser")
    assert status == 500
    error = json.loads(body)["error"]
    assert "ValueError" in error["message"] and "no thanks" in error["message"]


def test_timeout_gives_504_and_the_container_recovers(stack: Stack) -> None:
    stack.deploy("sleepy", textwrap.dedent(
        """
        import time

        def handle(event, context):
            if event.query.get("sleep"):
                time.sleep(float(event.query["sleep"]))
            return "awake"
        """
    ), timeout_s=0.5)
    status, _, body = stack.request("GET", "/function/sleepy?sleep=5")
    assert status == 504, body
    assert json.loads(body)["error"]["code"] == "timeout"
    status, _, body = stack.request("GET", "/function/sleepy")
    assert (status, body) == (200, b"awake")


@pytest.mark.parametrize("how", ["os._exit(3)", "os.kill(os.getpid(), signal.SIGSEGV)"])
def test_crash_gives_502_and_the_next_request_succeeds(stack: Stack, how: str) -> None:
    stack.deploy("crasher", textwrap.dedent(
        f"""
        import os, signal

        def handle(event, context):
            if event.query.get("crash"):
                {how}
            return "alive"
        """
    ))
    status, _, body = stack.request("GET", "/function/crasher?crash=1")
    assert status == 502, body
    assert json.loads(body)["error"]["code"] == "handler_crashed"
    status, _, body = stack.request("GET", "/function/crasher")
    assert (status, body) == (200, b"alive")


async def test_fifty_concurrent_calls_spread_over_four_containers(stack: Stack) -> None:
    await asyncio.to_thread(stack.deploy, "spread", textwrap.dedent(
        """
        import time

        def handle(event, context):
            time.sleep(0.05)
            return "ok"
        """
    ), min_scale=4, max_scale=4)
    await asyncio.to_thread(stack.wait_ready, "spread", 4)
    async with aiohttp.ClientSession() as session:

        async def call() -> str:
            async with session.get(f"{stack.url}/function/spread") as resp:
                assert resp.status == 200, await resp.text()
                return resp.headers["X-Hearth-Container"]

        served = await asyncio.gather(*(call() for _ in range(50)))
    counts = collections.Counter(served)
    assert len(counts) == 4, counts
    # Least connections with one slot each: every container takes its share.
    assert min(counts.values()) >= 8, counts
