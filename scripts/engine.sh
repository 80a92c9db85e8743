#!/usr/bin/env bash
# Make sure a Docker engine answers. On a fresh Debian machine, as root,
# install docker.io and start dockerd; otherwise say what is missing.
set -euo pipefail

log() { printf '[engine] %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
    log "Docker engine answers"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "no Docker engine answers and dockerd is not installed."
        log "Install Docker (Debian: apt-get install docker.io iptables) or start it, then retry."
        exit 1
    fi
    log "installing docker.io and iptables from Debian (about a minute)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io iptables >/dev/null
fi

if [ "$(id -u)" != 0 ]; then
    log "dockerd is installed but not running, and starting it needs root."
    log "Run: sudo systemctl start docker (or sudo dockerd &), then retry."
    exit 1
fi

# A dockerd killed at a session's end leaves its pid file behind, and a new
# one then refuses to start with "pid file found".
if [ -f /var/run/docker.pid ] && ! pgrep -x dockerd >/dev/null 2>&1; then
    log "removing stale /var/run/docker.pid"
    rm -f /var/run/docker.pid
fi
if [ -S /var/run/docker.sock ] && ! pgrep -x dockerd >/dev/null 2>&1; then
    rm -f /var/run/docker.sock
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
    log "starting dockerd (log: /var/log/hearth-dockerd.log)"
    # containerd may be stale too; dockerd starts its own when none runs.
    # Its own session: dockerd must outlive the shell, test or job that started it.
    setsid nohup dockerd >/var/log/hearth-dockerd.log 2>&1 < /dev/null &
fi

for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then
        log "Docker engine answers"
        exit 0
    fi
    sleep 0.5
done
log "dockerd did not answer within 60 s; last lines of its log:"
tail -n 20 /var/log/hearth-dockerd.log >&2 || true
exit 1
