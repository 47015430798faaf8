# syntax=docker/dockerfile:1
# Release binaries on Swift's Debian image; a slim Debian runtime with only the shared libraries
# they need. Later daemons (fz-gateway, fz-client, fz-portal) add their products to the same stages.
#
#   docker build -t fz .
#   docker run --rm --network host -e FZ_RELAY_REALM=example.org \
#       -e FZ_RELAY_RELAY_IP=203.0.113.10 -e FZ_RELAY_LISTENING_IP=203.0.113.10 \
#       -e FZ_RELAY_STATIC_AUTH_SECRET_FILE=/run/secrets/turn fz

FROM swift:6.3-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsodium-dev libsystemd-dev libidn-dev libsqlite3-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Resolve dependencies in their own layer so source edits do not refetch them.
COPY Package.swift ./
RUN swift package resolve
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product fz-relay --static-swift-stdlib \
 && install -D -m 0755 "$(swift build -c release --show-bin-path)/fz-relay" /out/usr/local/bin/fz-relay

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsodium23 libsystemd0 libidn12 libsqlite3-0 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --uid 65532 fz
COPY --from=build /out/ /
USER 65532:65532
# STUN/TURN on 3478/udp; relayed addresses from the default range.
EXPOSE 3478/udp 49152-65535/udp
ENV FZ_RELAY_LISTENING_PORT=3478
ENTRYPOINT ["/usr/local/bin/fz-relay"]
