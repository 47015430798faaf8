#!/usr/bin/env bash
# The demo (README's first command): the whole product on its embedded defaults, in network
# namespaces on this machine. Builds the four daemons, then `lab/fz-lab demo`: an SQLite portal,
# two relays in two "regions" (one 30 ms further away), two gateways in a Site behind a NAT
# router, a resource host running an HTTP server on the Site's LAN, and a client behind another
# NAT router; provisions a site, a resource, a group, a policy and tokens with the fz-portal CLI,
# starts the daemons as a user would, curls the resource from the client, prints `fz-client
# status`, and ends with one line:
#   demo: reached http://ADDRESS/ via GATEWAY over direct|relayed (RELAY) in N ms
# (or `demo: FAILED: reason`, exit 1). Everything it starts is stopped and removed at the end.
# Needs root (namespaces, TUN); FZ_DEMO_CLIENT_NAT / FZ_DEMO_GATEWAY_NAT: none, easy (default), hard.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
    echo "demo: FAILED: run as root (it builds network namespaces and TUN devices): sudo $0" >&2
    exit 1
fi
scripts/deps.sh test >/dev/null
for product in fz-portal fz-relay fz-gateway fz-client; do
    swift build --product "$product" >&2
done
exec python3 lab/fz-lab --bin-dir "$(swift build --show-bin-path)" demo \
    --client-nat "${FZ_DEMO_CLIENT_NAT:-easy}" --gateway-nat "${FZ_DEMO_GATEWAY_NAT:-easy}"
