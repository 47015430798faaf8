#!/usr/bin/env bash
# Installs what building and testing fz needs on Debian, only where it is missing.
# Usage: scripts/deps.sh [build|test]   (test also installs the real peers we test against)
set -euo pipefail
mode=${1:-test}
pkgs=(libsodium-dev libsystemd-dev libidn-dev libsqlite3-dev pkg-config)
if [[ $mode == test ]]; then
    pkgs+=(coturn python3 python3-pip iproute2 iptables nftables curl wireguard-go wireguard-tools iperf3 iputils-ping)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
if ((${#missing[@]})); then
    echo "deps: installing ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [[ $mode == test ]]; then
    # The Debian coturn package starts nothing here (no systemd), but make sure no packaged
    # turnserver we did not start is running on the ports tests use: we never kill it, only warn.
    # aioice: an independent TURN client; websockets: the portal's control-channel tests;
    # cryptography: the WireGuard flood test's MAC2 (cookie decryption). Without them those
    # tests would skip, so they are installed, not optional.
    python3 -c "import aioice, pytest, websockets, cryptography" 2>/dev/null \
        || python3 -m pip install -q aioice pytest websockets cryptography >&2 \
        || python3 -m pip install -q --break-system-packages aioice pytest websockets cryptography >&2
fi
