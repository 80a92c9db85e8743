#!/usr/bin/env bash
# Hearth's main job on a fresh machine: a Docker engine, the runtime image,
# both processes, and a sample function deployed and invoked.
# Hearth keeps running afterwards; Ctrl-C stops it.
# HEARTH_QUICKSTART_EXIT=1 stops it after the sample call instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { printf '[quickstart] %s\n' "$*" >&2; }

log "installing hearth (pip install -e .)"
python3 -m pip install -q -e . 2>&1 | grep -v -i "warning" >&2 || true
python3 -c "import gateway, pool_manager" || { log "pip install failed"; exit 1; }
bash scripts/engine.sh
bash scripts/image.sh

hearth() { python3 -m gateway.cli "$@"; }

log "starting the pool manager and the gateway (hearth up)"
up_args=()
# A run that stops after the sample call leaves no containers behind; a
# Hearth kept running leaves them for its next start to adopt.
if [ "${HEARTH_QUICKSTART_EXIT:-0}" = 1 ]; then up_args+=(--remove-on-exit); fi
python3 -m gateway.cli up "${up_args[@]}" &
up_pid=$!
stop() { kill -TERM "$up_pid" 2>/dev/null || true; wait "$up_pid" || true; }
trap 'stop; exit 130' INT TERM
# A step that fails (or a closed stdout) must not leave Hearth running behind us.
trap stop EXIT

for _ in $(seq 1 600); do
    if ! kill -0 "$up_pid" 2>/dev/null; then
        log "hearth up exited early"
        wait "$up_pid" || true
        exit 1
    fi
    if hearth ls >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done

log "deploying examples/hello.py as 'hello'"
hearth deploy hello examples/hello.py
log "invoking it: hearth invoke hello --data '{\"name\": \"Hearth\"}'"
hearth invoke hello --data '{"name": "Hearth"}'
echo
hearth ls

if [ "${HEARTH_QUICKSTART_EXIT:-0}" = 1 ]; then
    stop
    exit 0
fi
log "Hearth is running at http://127.0.0.1:${HEARTH_GATEWAY_PORT:-8080}; Ctrl-C stops it"
wait "$up_pid"
