#!/usr/bin/env bash
# The compose test (opt-in, not part of `make test`): build the one image, run
# docker-compose.yml with the `e2e` profile and pass when the client's `soulspot get`
# succeeds against the containerised mesh (the `cluster` profile: see below).
#
# Where no Docker engine runs, it uses Debian's podman as root behind podman's Docker API,
# as the README's Containers section describes: it installs the tools when
# missing, builds a base image with debootstrap when no registry is reachable, copies the
# host's CA bundle into the build context for pip, and runs the health checks itself
# (podman without systemd never does).
#
# Environment:
#   SOULSPOT_COMPOSE_WORK   work folder for podman's storage, sockets, samples
#                           (default /var/tmp/soulspot-compose; reused between runs)
#   SOULSPOT_BASE_IMAGE     base image (default localhost/localbase:bookworm, bootstrapped here)
#   SOULSPOT_COMPOSE_TIMEOUT  seconds for the `up` phase (default 600)
#   SOULSPOT_KEEP=1         leave the stack running (no teardown) for inspection
#   SOULSPOT_COMPOSE_CLUSTER=1  the `cluster` profile too: two routers on a three-node NATS
#                           JetStream cluster (replicas 3), every module and the client given
#                           both routers (the NATS nodes run from the project's image). It
#                           passes when every service is healthy (router-b and the NATS nodes
#                           too), a `soulspot get` through router-b alone succeeds, and, after
#                           the first router and nats-3 are killed, a `soulspot get` of another
#                           track given both routers succeeds (router-b, two of three nodes).
#
# Every container's output and health-check results land in $SOULSPOT_COMPOSE_WORK/logs.
set -euo pipefail

START=$(date +%s)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${SOULSPOT_COMPOSE_WORK:-/var/tmp/soulspot-compose}
PROJECT=soulspot-e2e
BASE=${SOULSPOT_BASE_IMAGE:-localhost/localbase:bookworm}
UP_TIMEOUT=${SOULSPOT_COMPOSE_TIMEOUT:-600}
CA_IN_CONTEXT=build/host-ca.crt

log() { printf '[compose-test %4ss] %s\n' "$(($(date +%s) - START))" "$*"; }
elapsed() { echo "$(($(date +%s) - START))"; }

if [[ $(id -u) -ne 0 ]]; then
    echo "compose-test: run as root (podman here runs containers as root)" >&2
    exit 2
fi

# -- tools ------------------------------------------------------------------------------------
# catatonit is podman's init for `init: true` (not always pulled in as a recommendation).
TOOLS=(podman runc netavark aardvark-dns fuse-overlayfs slirp4netns uidmap debootstrap iptables
       docker-compose catatonit)
missing=()
for bin in podman runc netavark debootstrap docker-compose iptables catatonit; do
    command -v "$bin" >/dev/null 2>&1 || [[ -x /usr/lib/podman/$bin ]] \
        || [[ -x /usr/libexec/podman/$bin ]] || missing+=("$bin")
done
if ((${#missing[@]})); then
    log "installing ${TOOLS[*]} (missing: ${missing[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${TOOLS[@]}" >/dev/null
fi

# -- podman configuration in the work folder --------------------------------------------------
mkdir -p "$W"/{run,storage,networks,tmp}
cat >"$W/storage.conf" <<EOF
[storage]
driver = "overlay"
runroot = "$W/run"
graphroot = "$W/storage"
EOF
# Each line is needed: root here lacks CAP_SYS_RESOURCE (default ulimits fail), crun fails
# on hybrid cgroups, there is no systemd for cgroups or the events journal; init_path names
# the init that `init: true` runs.
INIT_PATH=$(command -v catatonit || echo /usr/libexec/podman/catatonit)
cat >"$W/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
init_path = "$INIT_PATH"
[network]
network_backend = "netavark"
network_config_dir = "$W/networks"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
image_copy_tmp_dir = "$W/tmp"
EOF
export CONTAINERS_STORAGE_CONF=$W/storage.conf CONTAINERS_CONF=$W/containers.conf TMPDIR=$W/tmp

# -- a base image without a registry ----------------------------------------------------------
if [[ $BASE == localhost/localbase:bookworm ]] && ! podman image exists "$BASE"; then
    log "bootstrapping $BASE with debootstrap (minbase)"
    # The machine's own Debian mirror (MIRROR overrides it).
    MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
    if [[ -z $MIRROR ]]; then
        echo "compose-test: no Debian mirror found in apt's sources; set MIRROR" >&2
        exit 2
    fi
    rm -rf "$W/rootfs"
    debootstrap --variant=minbase bookworm "$W/rootfs" "$MIRROR" >"$W/debootstrap.log" 2>&1 || {
        tail -20 "$W/debootstrap.log"
        exit 1
    }
    rm -rf "$W"/rootfs/var/cache/apt/archives/*.deb "$W"/rootfs/var/lib/apt/lists/*
    tar -C "$W/rootfs" -c . | podman import - localbase:bookworm >/dev/null
    rm -rf "$W/rootfs"
fi

# -- podman's Docker API, the health-check loop, teardown --------------------------------------
SOCK=$W/podman.sock
rm -f "$SOCK"
podman system service --time=0 "unix://$SOCK" >"$W/podman-service.log" 2>&1 &
SERVICE_PID=$!
HEALTH_PID=
export DOCKER_HOST=unix://$SOCK
export COMPOSE_PROJECT_NAME=$PROJECT
COMPOSE=(docker-compose -f "$ROOT/docker-compose.yml" --profile e2e)
if [[ ${SOULSPOT_COMPOSE_CLUSTER:-0} == 1 ]]; then
    COMPOSE+=(--profile cluster)
    export SOULSPOT_BUS__BACKEND=jetstream SOULSPOT_BUS__NATS_REPLICAS=3 \
        SOULSPOT_ROUTER_ADDRESSES=router:50051,router-b:50051
fi

teardown() {
    local rc=$?
    set +e
    # Every container's output and health, kept in the work folder before teardown removes
    # the containers (a failed health check's output is only in podman's state).
    rm -rf "$W/logs"
    mkdir -p "$W/logs"
    local c name
    for c in $(podman ps -aq --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null); do
        name=$(podman inspect --format '{{.Name}}' "$c" 2>/dev/null) || continue
        podman logs "$c" >"$W/logs/$name.log" 2>&1
        podman inspect --format '{{.State.Status}} exit={{.State.ExitCode}} health={{.State.Health.Status}}' \
            "$c" >"$W/logs/$name.state" 2>&1
        podman inspect --format '{{range .State.Health.Log}}{{.ExitCode}} {{.Output}}{{println}}{{end}}' \
            "$c" >>"$W/logs/$name.state" 2>&1
    done
    if [[ ${SOULSPOT_KEEP:-0} != 1 ]]; then
        log "tearing down"
        "${COMPOSE[@]}" down -v --remove-orphans >"$W/down.log" 2>&1
    fi
    [[ -n $HEALTH_PID ]] && kill "$HEALTH_PID" 2>/dev/null
    [[ ${SOULSPOT_KEEP:-0} != 1 ]] && kill "$SERVICE_PID" 2>/dev/null
    rm -f "$ROOT/$CA_IN_CONTEXT"
    if [[ $rc -eq 0 ]]; then
        echo "compose-test: PASS in $(elapsed) s"
    else
        echo "compose-test: FAIL (exit $rc) after $(elapsed) s; logs in $W"
    fi
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

for _ in $(seq 100); do [[ -S $SOCK ]] && break; sleep 0.1; done
[[ -S $SOCK ]] || { echo "podman system service did not start" >&2; cat "$W/podman-service.log"; exit 1; }

# Without systemd podman never runs health checks: run them every 2 s for this project's
# containers, so `depends_on: condition: service_healthy` can be met.
(
    while true; do
        for c in $(podman ps -q --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null); do
            podman healthcheck run "$c" >/dev/null 2>&1 || true
        done
        sleep 2
    done
) &
HEALTH_PID=$!

# -- build ------------------------------------------------------------------------------------
# docker-compose cannot mount a host file into a build: the CA bundle travels in the context
# (for a proxy that re-signs HTTPS; harmless otherwise).
mkdir -p "$ROOT/build"
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    cp /etc/ssl/certs/ca-certificates.crt "$ROOT/$CA_IN_CONTEXT"
    export SOULSPOT_PIP_CERT=$CA_IN_CONTEXT
fi
export SOULSPOT_BASE_IMAGE=$BASE
log "building the image from $BASE"
"${COMPOSE[@]}" build >"$W/build.log" 2>&1 || { tail -40 "$W/build.log"; exit 1; }
log "image built"

# -- sample audio for the folder module (read-only bind mount) --------------------------------
PY=$ROOT/.venv/bin/python
[[ -x $PY ]] || PY=python3
rm -rf "$W/source"
(cd "$ROOT" && "$PY" -c '
import sys
from services.kit.testing.sample_audio import DEFAULT_SAMPLE_TRACKS, make_sample_library
print(len(make_sample_library(sys.argv[1], DEFAULT_SAMPLE_TRACKS)), "sample files")
' "$W/source")
chmod -R a+rX "$W/source"
export SOULSPOT_SOURCE_DIR=$W/source
# No MusicBrainz from a test; free host ports so nothing on the host collides.
export SOULSPOT_METADATA__OFFLINE=true SOULSPOT_PUBLISH_GRPC= SOULSPOT_PUBLISH_HTTP= \
    SOULSPOT_PUBLISH_GRPC_B= SOULSPOT_PUBLISH_HTTP_B=

# -- run --------------------------------------------------------------------------------------
# The stack up without the client, every service healthy (router-b too, which nothing depends
# on), then the client in a one-off container. Not `up --exit-code-from client`: that aborts
# the stack whenever docker-compose notices the one-shot `pki` service has exited, which under
# load can be while the client still runs (it then ends with 143).
"${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
# The services of the active profiles (docker-compose 1.29's `config --services` lists every
# profile's), without the one-shot pki (a dependency) and the client (run below).
PROFILES=(e2e)
[[ ${SOULSPOT_COMPOSE_CLUSTER:-0} == 1 ]] && PROFILES+=(cluster)
mapfile -t SERVICES < <("$PY" -c '
import sys, yaml
services = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))["services"]
for name, service in services.items():
    profiles = service.get("profiles") or []
    if name not in ("pki", "client") and (not profiles or set(profiles) & set(sys.argv[2:])):
        print(name)
' "$ROOT/docker-compose.yml" "${PROFILES[@]}")
UP_DEADLINE=$(($(date +%s) + UP_TIMEOUT))

# Waits until each named service's container is healthy; fails at UP_DEADLINE naming the rest.
wait_healthy() {
    local s status pending
    while true; do
        pending=()
        for s in "$@"; do
            status=$(podman inspect --format '{{.State.Health.Status}}' "${PROJECT}_${s}_1" 2>/dev/null) \
                || status=absent
            [[ $status == healthy ]] || pending+=("$s:$status")
        done
        ((${#pending[@]} == 0)) && return 0
        if (($(date +%s) >= UP_DEADLINE)); then
            log "not healthy after ${UP_TIMEOUT} s: ${pending[*]}"
            return 1
        fi
        sleep 2
    done
}

# `soulspot get` in a one-off client container (every service is already healthy): the
# arguments before `--` go to `docker-compose run` (-e ...), those after it are the command
# (none: the service's own). Its output is in $W/client-<n>.log.
CLIENT_RUNS=0
run_client() {
    local opts=() rc
    while (($#)) && [[ $1 != -- ]]; do opts+=("$1"); shift; done
    shift
    CLIENT_RUNS=$((CLIENT_RUNS + 1))
    set +e
    timeout 300 "${COMPOSE[@]}" run --rm --no-deps -T "${opts[@]}" client "$@" \
        >"$W/client-$CLIENT_RUNS.log" 2>&1
    rc=$?
    set -e
    grep -v '^Creating ' "$W/client-$CLIENT_RUNS.log" | tail -8
    return "$rc"
}

log "starting the stack (${SERVICES[*]})"
set +e
timeout "$UP_TIMEOUT" "${COMPOSE[@]}" up -d --no-build "${SERVICES[@]}" >"$W/up.log" 2>&1
rc=$?
set -e
if [[ $rc -ne 0 ]]; then
    log "the stack failed to start (exit $rc); last lines of $W/up.log:"
    tail -40 "$W/up.log"
    exit 1
fi
wait_healthy "${SERVICES[@]}" || exit 1
log "every service healthy"

if [[ ${SOULSPOT_COMPOSE_CLUSTER:-0} != 1 ]]; then
    log "client: soulspot get"
    run_client -- || { log "the client failed"; exit 1; }
    log "client's soulspot get succeeded"
    exit 0
fi

log "client through router-b alone"
run_client -e SOULSPOT_ROUTER_ADDRESS=router-b:50051 -- || {
    log "the client through router-b failed"
    exit 1
}
log "killing the first router and nats-3; the client given both routers"
podman kill "${PROJECT}_router_1" "${PROJECT}_nats-3_1" >/dev/null
run_client -- soulspot get "Mira Okonkwo - Slow Orbit" || {
    log "the client failed with the first router and nats-3 killed"
    exit 1
}
log "client's soulspot get succeeded through router-b on two of three NATS nodes"
