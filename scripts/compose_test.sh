#!/usr/bin/env bash
# The compose test (opt-in, not part of `make test`): build the one image, run
# docker-compose.yml with the `e2e` profile and pass when the client's `soulspot get`
# succeeds against the containerised mesh.
#
# Where no Docker engine runs, it uses Debian's podman as root behind podman's Docker API,
# as described in the project's notes on compose under podman: it installs the tools when
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
#                           JetStream cluster, every module and the client given both routers
#                           (slower; the NATS nodes run from the project's image)
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
export SOULSPOT_METADATA__OFFLINE=true SOULSPOT_PUBLISH_GRPC= SOULSPOT_PUBLISH_HTTP=

# -- run --------------------------------------------------------------------------------------
"${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
log "starting the stack; the client runs once every service is healthy"
set +e
timeout "$UP_TIMEOUT" "${COMPOSE[@]}" up --no-build --exit-code-from client >"$W/up.log" 2>&1
rc=$?
set -e
grep -E '^client_1 +\|' "$W/up.log" | tail -20 || true
if [[ $rc -ne 0 ]]; then
    log "the stack or the client failed (exit $rc); last lines of $W/up.log:"
    tail -60 "$W/up.log"
    exit 1
fi
log "client's soulspot get succeeded"
