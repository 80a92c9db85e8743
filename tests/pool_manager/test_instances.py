"""Loading code into a runtime, against a scripted runtime on a real unix socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pool_manager.instances import Instance, LoadFailed, load
from pool_manager.registry import FunctionSpec
from runtime import protocol

SYNTAX_ERROR = "SyntaxError: invalid syntax (main.py, line 1)\n\nTraceback (most recent call last): ..."


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[tuple[Instance, list[dict[str, Any]]]]:
    """An instance whose runtime answers every load with ``answers``' next entry."""
    answers: list[dict[str, Any]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await protocol.read_frame(reader)
        writer.write(protocol.encode(answers.pop(0)))
        await writer.drain()
        writer.close()

    inst = Instance(name="hearth-test-0000", socket_dir=tmp_path)
    server = await asyncio.start_unix_server(serve, inst.socket_path)
    yield inst, answers
    server.close()
    await server.wait_closed()


async def test_load_error_is_the_runtimes_message_without_the_function_name(
    runtime: tuple[Instance, list[dict[str, Any]]],
) -> None:
    inst, answers = runtime
    answers.append({"ok": False, "error": {"code": "load_failed", "message": SYNTAX_ERROR}})
    with pytest.raises(LoadFailed) as caught:
        await load(inst, FunctionSpec(name="syn", version="v1"), b"code", timeout_s=5)
    # The gateway says "function 'syn' failed to load: " in front of this.
    assert str(caught.value) == SYNTAX_ERROR
    assert inst.function is None


async def test_load_that_succeeds_specializes_the_instance(
    runtime: tuple[Instance, list[dict[str, Any]]],
) -> None:
    inst, answers = runtime
    answers.append({"ok": True, "workers": 1})
    await load(inst, FunctionSpec(name="fine", version="v2"), b"code", timeout_s=5)
    assert (inst.function, inst.version) == ("fine", "v2")
