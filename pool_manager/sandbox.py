"""The /execute sandbox as a built-in function: ``_execute``, run by the runtime in sandbox mode.

The pool treats it like any function: prewarmed generic containers are
specialized to it by a ``load`` (here with ``mode: "sandbox"`` and no code),
it is routed by least connections with one run per container at a time,
health-checked, adopted after a restart and autoscaled on the execute
queue. What happens inside a container is ``runtime/sandbox.py``'s.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from pool_manager.config import Config
from pool_manager.registry import FunctionSpec

NAME = "_execute"  # "_" is outside user names: no deploy can take or shadow it
# On top of the longest run: killing, sweeping and wiping after it.
CLEANUP_MARGIN_S = 5.0


def load_meta(config: Config) -> dict[str, Any]:
    """The extra ``load`` settings: sandbox mode and the maxima the runtime enforces too."""
    s = config.sandbox
    return {
        "mode": "sandbox",
        "max_runs": s.max_runs,
        "max_timeout_s": s.max_timeout_s,
        "max_memory_mb": s.max_memory_mb,
        "max_output_bytes": s.output_limit_bytes,
    }


def sandbox_spec(config: Config) -> FunctionSpec:
    s = config.sandbox
    fields: dict[str, Any] = {
        "name": NAME,
        "handler": "-",  # nothing is imported in sandbox mode
        "timeout_s": s.max_timeout_s + CLEANUP_MARGIN_S,
        "memory_mb": s.memory_mb,
        "concurrency": 1,  # a run has the whole container; cleanup kills everything else
        "min_scale": s.min_scale,
        "max_scale": s.max_scale,
    }
    # Changing a setting changes the version, so old containers are replaced
    # rather than adopted after a restart.
    digest = hashlib.sha256(orjson.dumps([fields, load_meta(config)], option=orjson.OPT_SORT_KEYS))
    return FunctionSpec(**fields, version=digest.hexdigest()[:16])
