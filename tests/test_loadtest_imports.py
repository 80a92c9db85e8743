"""The benchmark commands import cleanly (a circular import once broke one)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from tests.integration.stack import REPO


@pytest.mark.parametrize(
    "module", ["loadtest.bench", "loadtest.bench_execute", "loadtest.bench_async", "loadtest.bench_haproxy"]
)
def test_benchmark_modules_import_and_answer_help(module: str) -> None:
    importlib.import_module(module)
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout
