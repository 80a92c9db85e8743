from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.stack import Stack, engine_answers

pytestmark = pytest.mark.docker


@pytest.fixture(scope="session")
def engine() -> None:
    if not engine_answers():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but no Docker engine answers: .ci/run must start one")
        pytest.skip("no Docker engine answers (run scripts/engine.sh)")


@pytest.fixture(scope="session")
def stack(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One shared Hearth for tests that do not restart or break its processes."""
    s = Stack(tmp_path_factory.mktemp("stack"))
    try:
        yield s.up()
    finally:
        s.down()


@pytest.fixture
def own_stack(engine: None, tmp_path: Path) -> Iterator[Stack]:
    """A Hearth of the test's own, for tests that restart or kill processes."""
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.down()
