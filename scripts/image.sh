#!/usr/bin/env bash
# Build the function runtime image (default hearth-runtime:latest) from
# runtime/Dockerfile. The base is $HEARTH_BASE_IMAGE, else python:3.12-slim
# (local or pulled), else a Debian bookworm + python3 image built here with
# debootstrap, since these machines reach no container registry.
# Rebuilds only when runtime/ or the base changed.
set -euo pipefail

log() { printf '[image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNTIME_DIR="$ROOT/runtime"
IMAGE="${HEARTH_RUNTIME_IMAGE:-hearth-runtime:latest}"
SLIM=python:3.12-slim
LOCAL_BASE=hearth-base:bookworm
PULL_TIMEOUT_S="${HEARTH_PULL_TIMEOUT_S:-20}"
# The Debian engine has no buildx; the legacy builder works with every client.
export DOCKER_BUILDKIT=0

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# The main Debian archive apt uses (not security, not third-party repos).
debian_mirror() {
    local found
    found="$(
        {
            for f in /etc/apt/sources.list.d/*.sources; do
                [ -f "$f" ] || continue
                awk 'BEGIN { RS = ""; FS = "\n" }
                     { u = ""; c = ""; on = 1
                       for (i = 1; i <= NF; i++) {
                         if ($i ~ /^URIs:/) { u = $i; sub(/^URIs:[ \t]*/, "", u) }
                         if ($i ~ /^Components:/) c = $i
                         if ($i ~ /^Enabled:[ \t]*no/) on = 0 }
                       if (on && c ~ /[ \t]main([ \t]|$)/) print u }' "$f"
            done
            for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
                [ -f "$f" ] || continue
                sed -E 's/\[[^]]*\]//' "$f" |
                    awk '$1 == "deb" { for (i = 4; i <= NF; i++) if ($i == "main") print $2 }'
            done
        } | tr ' \t' '\n\n' | grep -E '^https?://.*/debian(/|$)' | grep -v security | head -n 1
    )" || true
    printf '%s\n' "${found:-http://deb.debian.org/debian}"
}

build_local_base() {
    [ "$(id -u)" = 0 ] || die "building $LOCAL_BASE with debootstrap needs root (or set HEARTH_BASE_IMAGE)"
    if ! command -v debootstrap >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 || die "debootstrap is missing and apt-get is unavailable"
        log "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } ||
            die "could not install debootstrap"
    fi
    local mirror dir
    mirror="$(debian_mirror)"
    dir="$(mktemp -d "${TMPDIR:-/var/tmp}/hearth-base.XXXXXX")"
    ROOTFS_DIR="$dir"
    trap remove_rootfs EXIT
    log "building $LOCAL_BASE: debootstrap bookworm from $mirror (30-60 s)"
    local started=$SECONDS
    debootstrap --variant=minbase --include=python3 bookworm "$dir" "$mirror" \
        >"$dir.log" 2>&1 || { tail -n 20 "$dir.log" >&2; die "debootstrap failed"; }
    # Functions need none of these; they are a third of the image.
    rm -rf "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
        "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/*
    log "importing the root filesystem as $LOCAL_BASE"
    tar -C "$dir" -c . | docker import \
        -m "Debian bookworm minbase + python3 (scripts/image.sh)" \
        -c 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null || die "docker import failed"
    remove_rootfs
    log "built $LOCAL_BASE in $((SECONDS - started)) s"
}

ROOTFS_DIR=""
remove_rootfs() {
    [ -n "$ROOTFS_DIR" ] || return 0
    # A failed debootstrap can leave proc/sys mounted inside: never delete through them.
    grep -o " $ROOTFS_DIR/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf --one-file-system "$ROOTFS_DIR" "$ROOTFS_DIR.log"
    ROOTFS_DIR=""
}

choose_base() {
    if [ -n "${HEARTH_BASE_IMAGE:-}" ]; then
        have_image "$HEARTH_BASE_IMAGE" ||
            timeout "$PULL_TIMEOUT_S" docker pull -q "$HEARTH_BASE_IMAGE" >/dev/null ||
            die "HEARTH_BASE_IMAGE=$HEARTH_BASE_IMAGE is not a local image and could not be pulled"
        BASE="$HEARTH_BASE_IMAGE"; return
    fi
    # Local images first: a second run must not wait on a registry.
    for BASE in "$SLIM" "$LOCAL_BASE"; do
        have_image "$BASE" && return
    done
    log "trying docker pull $SLIM (at most ${PULL_TIMEOUT_S} s)"
    if timeout "$PULL_TIMEOUT_S" docker pull -q "$SLIM" >/dev/null 2>&1; then
        BASE="$SLIM"; return
    fi
    log "no registry reachable"
    build_local_base
    BASE="$LOCAL_BASE"
}

runtime_sha() {
    (cd "$RUNTIME_DIR" &&
        find . -name '*.py' -not -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z |
            xargs -0 sha256sum Dockerfile) | sha256sum | cut -d' ' -f1
}

main() {
    docker info >/dev/null 2>&1 || die "no Docker engine answers (run scripts/engine.sh)"
    [ -f "$RUNTIME_DIR/Dockerfile" ] || die "$RUNTIME_DIR/Dockerfile not found"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"${TMPDIR:-/tmp}/hearth-image.$(id -u).lock"
        flock 9
    fi
    choose_base
    local sha base_id
    sha="$(runtime_sha)"
    base_id="$(docker image inspect -f '{{.Id}}' "$BASE")"
    if [ "$(docker image inspect -f '{{index .Config.Labels "hearth.runtime-sha"}} {{index .Config.Labels "hearth.base-id"}}' "$IMAGE" 2>/dev/null)" = "$sha $base_id" ]; then
        log "$IMAGE is up to date (runtime sha ${sha:0:12}, base $BASE); not rebuilding"
    else
        log "building $IMAGE from $BASE (runtime sha ${sha:0:12})"
        local old_id
        old_id="$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null)" || true
        local out
        out="$(docker build --build-arg "BASE=$BASE" \
            --label "hearth.runtime-sha=$sha" --label "hearth.base-id=$base_id" \
            -t "$IMAGE" "$RUNTIME_DIR" 2>&1)" ||
            { printf '%s\n' "$out" >&2; die "docker build of $IMAGE failed"; }
        # Drop the image this one replaced if nothing names it any more (never
        # by id while another tag, or a container, still uses it).
        if [ -n "$old_id" ] &&
            [ "$(docker image inspect -f '{{len .RepoTags}}' "$old_id" 2>/dev/null)" = 0 ]; then
            docker rmi "$old_id" >/dev/null 2>&1 || true
        fi
    fi
    local version
    version="$(docker run --rm --network none --entrypoint python3 "$IMAGE" \
        -c 'import runtime.protocol, sys; print(sys.version.split()[0])')" ||
        die "$IMAGE does not import runtime.protocol"
    log "$IMAGE ready (Python $version)"
}

main "$@"
