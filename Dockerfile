# syntax=docker/dockerfile:1
# Release binaries on Swift's Debian image; a slim Debian runtime with only the shared libraries
# they need. The default target is the relay; `--target gateway` and `--target client` build the
# gateway and client images.
#
#   docker build -t fz .
#   docker run --rm --network host -e FZ_RELAY_REALM=example.org \
#       -e FZ_RELAY_RELAY_IP=203.0.113.10 -e FZ_RELAY_LISTENING_IP=203.0.113.10 \
#       -e FZ_RELAY_STATIC_AUTH_SECRET_FILE=/run/secrets/turn fz
#
#   docker build --target gateway -t fz-gateway .
#   docker run -d --cap-add NET_ADMIN --device /dev/net/tun \
#       --sysctl net.ipv4.ip_forward=1 --sysctl net.ipv6.conf.all.forwarding=1 \
#       -e FZ_PORTAL_URL=https://portal.example.org -e FZ_TOKEN="$SITE_TOKEN" fz-gateway
#   (portal mode: two variables, no inbound port, no volume; the container's own network namespace
#   is fine, since its traffic to the Site is masqueraded. The static mode still works:
#   -v /etc/fz/wg0.conf:/etc/fz/wg0.conf:ro fz-gateway --wg-config /etc/fz/wg0.conf --interface wg0,
#   the file readable by uid 65532; the gateway runs as that user with CAP_NET_ADMIN only.)
#
#   docker build --target client -t fz-client .
#   docker run -d --cap-add NET_ADMIN --device /dev/net/tun -v fz-client:/var/lib/fz-client \
#       -e FZ_PORTAL_URL=https://portal.example.org -e FZ_TOKEN="$CLIENT_TOKEN" fz-client
#   (the volume keeps the client's key, so it stays the same client; --network host puts the
#   routes to the resources on the host instead of in the container;
#   docker exec CONTAINER fz-client status)

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
 && swift build -c release --product fz-gateway --static-swift-stdlib \
 && swift build -c release --product fz-client --static-swift-stdlib \
 && install -D -m 0755 "$(swift build -c release --show-bin-path)/fz-relay" /out/usr/local/bin/fz-relay \
 && install -D -m 0755 "$(swift build -c release --show-bin-path)/fz-gateway" /out/usr/local/bin/fz-gateway \
 && install -D -m 0755 "$(swift build -c release --show-bin-path)/fz-client" /out/usr/local/bin/fz-client

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsodium23 libsystemd0 libidn12 libsqlite3-0 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --uid 65532 fz
COPY --from=build /out/ /

# The gateway: WireGuard over a TUN device. It needs CAP_NET_ADMIN, which a non-root user only
# gets through a file capability (the container's bounding set must hold it: --cap-add NET_ADMIN).
# Portal mode also runs nft for its masquerade table: nft gets the same file capability (exec
# does not pass the gateway's on), in an image that runs nothing else.
FROM runtime AS gateway
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin nftables \
 && setcap cap_net_admin,cap_net_raw=ep /usr/local/bin/fz-gateway \
 && setcap cap_net_admin=ep /usr/sbin/nft \
 && apt-get purge -y libcap2-bin && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/fz-gateway"]

# The client: a TUN device and routes (CAP_NET_ADMIN as a file capability, as for the gateway);
# its key lives in the state directory, a volume owned by the fz user.
FROM runtime AS client
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && setcap cap_net_admin=ep /usr/local/bin/fz-client \
 && apt-get purge -y libcap2-bin && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
 && install -d -m 0700 -o 65532 -g 65532 /var/lib/fz-client
VOLUME /var/lib/fz-client
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/fz-client", "run"]

# The relay (default target).
FROM runtime AS relay
USER 65532:65532
# STUN/TURN on 3478/udp; relayed addresses from the default range.
EXPOSE 3478/udp 49152-65535/udp
ENV FZ_RELAY_LISTENING_PORT=3478
ENTRYPOINT ["/usr/local/bin/fz-relay"]
