"""``python -m gateway``: the public HTTP edge."""

from __future__ import annotations

import logging
import os
import sys

from aiohttp import web

from gateway.app import make_app
from gateway.config import Config, ConfigError

log = logging.getLogger("hearth.gateway")


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("HEARTH_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        config = Config.from_env(os.environ)
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    # run_app turns SIGTERM into a graceful stop: the listener closes first,
    # then in-flight requests get up to shutdown_timeout to finish.
    web.run_app(
        make_app(config), host=config.host, port=config.port,
        shutdown_timeout=config.shutdown_timeout_s, access_log=None,
        print=lambda _msg: log.info("listening on http://%s:%d", config.host, config.port),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
