# syntax=docker/dockerfile:1
#
# websocket-bridge container image.
#
#   docker build -t websocket-bridge .
#   docker run --rm -p 8080:8080 --stop-timeout 40 \
#       -e WS_BRIDGE_ALLOWLIST='https://api\.example\.com/ws/.*' \
#       -e WS_BRIDGE_BASE_URL=https://bridge.example.com \
#       websocket-bridge
#
# Configuration: flags after the image name (`docker run … websocket-bridge --allowlist …`),
# WS_BRIDGE_* environment variables, or a mounted TOML file
# (`-v ./config.toml:/etc/websocket-bridge/config.toml:ro` and `--config /etc/websocket-bridge/config.toml`,
# see packaging/config.example.toml). Without an allowlist every connection is refused.
#
# Stopping: on SIGTERM the bridge drains for --shutdown-grace (30 s by default), but `docker stop`
# sends SIGKILL after 10 s unless told otherwise: give it `--stop-timeout 40` (compose:
# `stop_grace_period: 40s`, Kubernetes: `terminationGracePeriodSeconds: 40`), or lower
# WS_BRIDGE_SHUTDOWN_GRACE below the platform's timeout.

# ---- build ----------------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crates.io downloads and the target directory between builds (BuildKit).
# The target directory is a cache mount, so the binary is copied out in the same step. The
# dist profile (release plus fat LTO and one codegen unit, about 10-15 % less CPU per message,
# see docs/PERFORMANCE.md) keeps line-level debug info (debug = 1) for local profiling; the image does
# not need it (57 MB of the 70 MB), so it is stripped. Symbols stay, for readable backtraces.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked --bin websocket-bridge \
    && strip --strip-debug target/dist/websocket-bridge \
    && install -D -m 0755 target/dist/websocket-bridge /out/websocket-bridge

# ---- runtime ------------------------------------------------------------------------------------------
FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="websocket-bridge" \
      org.opencontainers.image.description="A WebSocket-to-HTTP gateway: WebSocket clients on one side, plain HTTP POST backends on the other." \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

# ca-certificates: https backends are verified against the system's roots (/etc/ssl/certs).
# The binary needs nothing else beyond glibc and libgcc_s, which the base image has.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 websocket-bridge \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin websocket-bridge

COPY --from=build /out/websocket-bridge /usr/local/bin/websocket-bridge

# Numeric, so that orchestrators can check runAsNonRoot.
USER 10001:10001

# Listen on every interface inside the container. Also set WS_BRIDGE_BASE_URL to the public URL:
# without it, callback URLs name 127.0.0.1, which backends outside the container cannot reach.
ENV WS_BRIDGE_ADDRESS=0.0.0.0:8080
EXPOSE 8080

# GET /healthz on the listening port. The slim image has no curl, and installing it would add
# libcurl and a dozen libraries (size and attack surface) for one request, so the check uses
# bash's /dev/tcp (bash, like grep and head, is part of every Debian image): it sends a plain
# HTTP/1.1 request and requires a `200` status line. The port is taken from WS_BRIDGE_ADDRESS:
# if you pass --address on the command line or enable TLS (--cert/--key), override this check
# (`docker run --health-cmd …` or `--no-healthcheck`, or an orchestrator's own probe).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${WS_BRIDGE_ADDRESS##*:} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q '^HTTP/1\\.[01] 200 '"]

# The bridge handles SIGTERM itself (drain, then exit 0) and starts no child processes, so it
# can run as PID 1 without an init.
STOPSIGNAL SIGTERM
ENTRYPOINT ["websocket-bridge"]
