"""``python -m gateway``: the public HTTP edge."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from aiohttp import web

from gateway.app import GATEWAY_KEY, make_app
from gateway.config import Config, ConfigError
from hearth import logs
from hearth.sd_notify import notify

log = logging.getLogger("hearth.gateway")
_pending: set[asyncio.Task[None]] = set()


async def _notify_when_routed(app: web.Application) -> None:
    # systemd's READY=1 means "dependents may use me": listening is not
    # enough, the first routing table must be in too (what /readyz says).
    await app[GATEWAY_KEY].routes.ready.wait()
    notify("READY=1")


def _listening(app: web.Application, config: Config) -> None:
    """run_app calls this, inside its loop, once the sockets listen."""
    log.info("listening on http://%s:%d", config.host, config.port)
    task = asyncio.get_running_loop().create_task(_notify_when_routed(app))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


def main() -> int:
    logs.setup("gateway", os.environ.get("HEARTH_LOG_LEVEL", "INFO"))
    try:
        config = Config.from_env(os.environ)
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    # run_app turns SIGTERM into a graceful stop: the listener closes first,
    # then in-flight requests get up to shutdown_timeout to finish.
    app = make_app(config)
    web.run_app(
        app, host=config.host, port=config.port,
        shutdown_timeout=config.shutdown_timeout_s, access_log=None,
        print=lambda _msg: _listening(app, config),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
