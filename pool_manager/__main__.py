"""``python -m pool_manager``: warm containers, the registry and the control API."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from aiohttp import web

from hearth import logs
from hearth.sd_notify import notify
from pool_manager import health, metrics
from pool_manager.backend import BackendError
from pool_manager.config import Config, ConfigError
from pool_manager.control_api import make_app
from pool_manager.docker_backend import DockerBackend
from pool_manager.pool import Pool
from pool_manager.registry import Registry
from pool_manager.sandbox import load_meta, sandbox_spec

log = logging.getLogger("hearth.pool_manager")


async def serve(config: Config) -> None:
    backend = DockerBackend()
    await backend.ping()
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config.sockets_dir.mkdir(parents=True, exist_ok=True)
    pool = Pool(config, backend, Registry(config.functions_dir))
    metrics.register_pool(pool)
    if config.sandbox.max_scale:  # before adoption, which must recognise its containers
        pool.add_builtin(sandbox_spec(config), b"", load_meta(config))
    await health.adopt(pool)
    await pool.reconcile()
    runner = web.AppRunner(make_app(config, pool), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.control_host, config.control_port, shutdown_timeout=2.0)
    await site.start()
    log.info("control API on http://%s:%d", config.control_host, config.control_port)
    notify("READY=1")  # Type=notify: listening, containers adopted
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    rounds = asyncio.create_task(health.loop(pool))
    await stop.wait()
    log.info("stopping (%s containers)", "removing" if config.remove_on_exit else "leaving")
    rounds.cancel()
    pool.routes.close()  # release long-polling gateways at once
    await runner.cleanup()
    await pool.shutdown(remove=config.remove_on_exit)


def main() -> int:
    logs.setup("pool_manager", os.environ.get("HEARTH_LOG_LEVEL", "INFO"))
    try:
        config = Config.from_env(os.environ)
    except ConfigError as exc:
        print(f"pool_manager: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config))
    except BackendError as exc:
        print(f"pool_manager: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
