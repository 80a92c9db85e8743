#!/usr/bin/env bash
# The one test command for a fresh machine: install, make sure Docker and the
# runtime image are there, then lint, type-check and run the tests.
# Extra arguments go to pytest (e.g. bash scripts/test.sh -k breaker -x).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { printf '[test] %s\n' "$*" >&2; }

export HEARTH_RUNTIME_IMAGE=hearth-runtime:latest

log "installing hearth with test, loadtest and redis extras"
# loadtest: tests/integration/test_locust.py runs Locust (in its own process);
# redis: tests/integration/test_dedup_redis.py shares webhook dedup through a
# real redis-server, which it starts on a free loopback port and stops again.
python3 -m pip install -q -e '.[test,loadtest,redis]'
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing redis-server (Debian package; the tests start their own)"
        apt-get install -y -qq redis-server >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
    else
        log "redis-server is missing: install it (apt-get install redis-server) or the dedup test cannot run"
    fi
fi
bash scripts/engine.sh
bash scripts/image.sh

log "ruff"
python3 -m ruff check .
log "mypy"
python3 -m mypy gateway hearth pool_manager runtime loadtest
log "pytest"
status=0
python3 -m pytest -q "$@" || status=$?
if [ "$status" = 5 ]; then
    log "pytest collected no tests: failing"
    exit 1
fi
exit "$status"
