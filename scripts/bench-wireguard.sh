#!/usr/bin/env bash
# WireGuard data-plane benchmark: iperf3 TCP through a tunnel between two network namespaces, for
# fz<->fz, fz<->wireguard-go and wireguard-go<->wireguard-go, in ONE run on the same veth setup,
# with 1 and 4 streams. Also the CPU time the two tunnel processes spent per gigabit moved (utime +
# stime from /proc/PID/stat, both ends added up), which is steadier than the rates on a noisy box.
#
# Needs root, iperf3, wireguard-go, wireguard-tools (apt-get install --no-install-recommends).
# Takes about a minute plus the release build. Prints a Markdown table, then the fz<->fz /
# wireguard-go<->wireguard-go ratios (throughput and CPU per Gbit).
#
# Environment (all optional):
#   FZ_GATEWAY_BIN=PATH           fz-gateway to use (default: swift build -c release --product fz-gateway)
#   FZ_BENCH_SECONDS=5            iperf3 duration per measurement
#   FZ_BENCH_PAIRS="fz-fz fzi-fzi fz-wg wg-wg fzn-fzn"   which pairs (A-B: A is the iperf3 client side);
#                                 fz = fz-gateway (offloads on, its default), fzn = fz-gateway --no-offload,
#                                 fzi = fz-gateway with FZ_BENCH_IDLE_PEERS idle peers configured beside
#                                 the busy one (the many-peer data plane must not slow the busy one down)
#   FZ_BENCH_IDLE_PEERS=500       idle peers for fzi (own keys, a /32 each, an endpoint nobody answers on)
#
# Namespaces fzwgb-a-<pid>/fzwgb-b-<pid>, veth 10.241.0.1/.2, tunnel 10.242.0.1/.2; everything is
# deleted on exit (trap), also on failure or Ctrl-C. Processes are stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FZ_BENCH_SECONDS:-5}
pairs=${FZ_BENCH_PAIRS:-"fz-fz fzi-fzi fz-wg wg-wg fzn-fzn"}
idle_peers=${FZ_BENCH_IDLE_PEERS:-500}
[ "$(id -u)" = 0 ] || { echo "bench-wireguard.sh: needs root" >&2; exit 1; }
for tool in iperf3 wireguard-go wg ip; do
    command -v $tool >/dev/null || { echo "bench-wireguard.sh: $tool missing (apt-get install --no-install-recommends iperf3 wireguard-go wireguard-tools)" >&2; exit 1; }
done

if [ -z "${FZ_GATEWAY_BIN:-}" ]; then
    swift build -c release --product fz-gateway >&2
    FZ_GATEWAY_BIN="$(swift build -c release --show-bin-path)/fz-gateway"
fi

tag=$$
ns_a=fzwgb-a-$tag ns_b=fzwgb-b-$tag
veth_a=fzbva$tag veth_b=fzbvb$tag
work=$(mktemp -d /tmp/fzwgbench.XXXXXX)
pids=()
clk_tck=$(getconf CLK_TCK)

stop_pids() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    pids=()
}

cleanup() {
    stop_pids
    ip netns del "$ns_a" 2>/dev/null || true
    ip netns del "$ns_b" 2>/dev/null || true
    rm -f /var/run/wireguard/wgbna$tag.sock /var/run/wireguard/wgbnb$tag.sock
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

ip netns add "$ns_a"
ip netns add "$ns_b"
ip -n "$ns_a" link set lo up
ip -n "$ns_b" link set lo up
ip link add "$veth_a" netns "$ns_a" type veth peer name "$veth_b" netns "$ns_b"
ip -n "$ns_a" addr add 10.241.0.1/24 dev "$veth_a"
ip -n "$ns_b" addr add 10.241.0.2/24 dev "$veth_b"
ip -n "$ns_a" link set "$veth_a" up
ip -n "$ns_b" link set "$veth_b" up

key_a=$(wg genkey) key_b=$(wg genkey)
pub_a=$(echo "$key_a" | wg pubkey) pub_b=$(echo "$key_b" | wg pubkey)

# start_side SIDE(a|b) KIND(fz|wg): starts the tunnel process, sets TUNNEL_PID
start_side() {
    local side=$1 kind=$2 ns key peer_pub port peer_port addr peer_addr peer_under ifname
    if [ "$side" = a ]; then
        ns=$ns_a key=$key_a peer_pub=$pub_b port=51830 peer_port=51831 addr=10.242.0.1 peer_addr=10.242.0.2 peer_under=10.241.0.2
    else
        ns=$ns_b key=$key_b peer_pub=$pub_a port=51831 peer_port=51830 addr=10.242.0.2 peer_addr=10.242.0.1 peer_under=10.241.0.1
    fi
    ifname=wgbn$side$tag
    if [ "$kind" = fz ] || [ "$kind" = fzn ] || [ "$kind" = fzi ]; then
        local offload_flag=--offload
        [ "$kind" = fzn ] && offload_flag=--no-offload
        cat > "$work/$side.conf" <<EOF
[Interface]
PrivateKey = $key
ListenPort = $port
Address = $addr/24
MTU = 1420
[Peer]
PublicKey = $peer_pub
AllowedIPs = $peer_addr/32
Endpoint = $peer_under:$peer_port
EOF
        if [ "$kind" = fzi ]; then
            # Idle peers: random public keys, 10.243.x.y/32 each, an endpoint on the other side's
            # address where nothing listens. They never handshake (no traffic, no keepalive).
            python3 - "$idle_peers" "$peer_under" >> "$work/$side.conf" <<'PY'
import base64, os, sys
count, under = int(sys.argv[1]), sys.argv[2]
for i in range(count):
    key = base64.b64encode(os.urandom(32)).decode()
    print(f"[Peer]\nPublicKey = {key}\nAllowedIPs = 10.243.{i // 250}.{i % 250 + 1}/32\nEndpoint = {under}:{40000 + i}")
PY
        fi
        ip netns exec "$ns" "$FZ_GATEWAY_BIN" --wg-config "$work/$side.conf" --interface "$ifname" \
            $offload_flag --log-level warning > "$work/$side.log" 2>&1 &
        TUNNEL_PID=$!
        for _ in $(seq 100); do ip -n "$ns" link show "$ifname" 2>/dev/null | grep -q ',UP' && break; sleep 0.1; done
    else
        ip netns exec "$ns" wireguard-go -f "$ifname" > "$work/$side.log" 2>&1 &
        TUNNEL_PID=$!
        for _ in $(seq 100); do [ -S "/var/run/wireguard/$ifname.sock" ] && break; sleep 0.1; done
        echo "$key" > "$work/$side.key"
        ip netns exec "$ns" wg set "$ifname" private-key "$work/$side.key" listen-port $port \
            peer "$peer_pub" allowed-ips $peer_addr/32 endpoint $peer_under:$peer_port
        ip -n "$ns" addr add $addr/24 dev "$ifname"
        ip -n "$ns" link set "$ifname" mtu 1420 up
    fi
    pids+=("$TUNNEL_PID")
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure STREAMS: prints "mbits cpu_s_per_gbit"
measure() {
    local streams=$1 before_a before_b after_a after_b out mbits bits cpu
    before_a=$(cpu_ticks "$pid_a") before_b=$(cpu_ticks "$pid_b")
    out=$(ip netns exec "$ns_a" iperf3 -c 10.242.0.2 -t "$seconds" -P "$streams" -J)
    after_a=$(cpu_ticks "$pid_a") after_b=$(cpu_ticks "$pid_b")
    bits=$(echo "$out" | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]; print(e["sum_received"]["bytes"]*8)')
    mbits=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6)')
    cpu=$(( after_a - before_a + after_b - before_b ))
    python3 -c "print(f'{$mbits:.0f} {($cpu / $clk_tck) / ($bits / 1e9):.2f}')"
}

results=()
for pair in $pairs; do
    kind_a=${pair%-*} kind_b=${pair#*-}
    start_side a "$kind_a"; pid_a=$TUNNEL_PID
    start_side b "$kind_b"; pid_b=$TUNNEL_PID
    ip netns exec "$ns_b" iperf3 -s -B 10.242.0.2 > /dev/null 2>&1 &
    pids+=("$!")
    ok=0
    for _ in $(seq 50); do
        if ip netns exec "$ns_a" ping -c 1 -W 1 10.242.0.2 > /dev/null 2>&1; then ok=1; break; fi
    done
    if [ $ok = 0 ]; then
        echo "bench-wireguard.sh: $pair: no traffic through the tunnel" >&2
        cat "$work"/a.log "$work"/b.log >&2
        exit 1
    fi
    sleep 0.5
    one=$(measure 1)
    four=$(measure 4)
    results+=("$pair $one $four")
    echo "$pair: 1 stream ${one% *} Mbit/s, 4 streams ${four% *} Mbit/s" >&2
    stop_pids
    rm -f "$work"/a.conf "$work"/b.conf
done

names() { case $1 in fz) echo fz-gateway;; fzn) echo "fz-gateway --no-offload";; fzi) echo "fz-gateway + $idle_peers idle peers";;
                    wg) echo wireguard-go;; esac; }
echo
echo "iperf3 TCP through the tunnel, ${seconds} s each, $(nproc) cores; CPU = both tunnel processes (user+sys) per Gbit moved"
printf '| %-52s | %12s | %12s | %12s | %12s |\n' "client side -> server side" "1 stream Mb/s" "CPU s/Gbit" "4 streams Mb/s" "CPU s/Gbit"
printf '| %-52s | %12s | %12s | %12s | %12s |\n' "----------------------------------------------------" "------------" "------------" "------------" "------------"
for r in "${results[@]}"; do
    set -- $r
    pair=$1 a=${1%-*} b=${1#*-}
    printf '| %-52s | %12s | %12s | %12s | %12s |\n' "$(names "$a") -> $(names "$b")" "$2" "$3" "$4" "$5"
done

# The ratio the issue asks for: fz<->fz over wireguard-go<->wireguard-go (same run, same box).
fzfz="" wgwg="" fzifzi=""
for r in "${results[@]}"; do
    case $r in fz-fz\ *) fzfz=$r;; wg-wg\ *) wgwg=$r;; fzi-fzi\ *) fzifzi=$r;; esac
done
if [ -n "$fzfz" ] && [ -n "$fzifzi" ]; then
    python3 - $fzfz $fzifzi "$idle_peers" <<'PY'
import sys
f = [float(x) for x in sys.argv[2:6]]
i = [float(x) for x in sys.argv[7:11]]
print(f"\nwith {sys.argv[11]} idle peers / with one peer (fz-gateway<->fz-gateway): throughput x{i[0] / f[0]:.2f} (1 stream), "
      f"x{i[2] / f[2]:.2f} (4 streams); CPU per Gbit x{i[1] / f[1]:.2f} (1 stream), x{i[3] / f[3]:.2f} (4 streams)")
PY
fi
if [ -n "$fzfz" ] && [ -n "$wgwg" ]; then
    python3 - $fzfz $wgwg <<'PY'
import sys
f = [float(x) for x in sys.argv[2:6]]
w = [float(x) for x in sys.argv[7:11]]
print(f"\nfz-gateway<->fz-gateway / wireguard-go<->wireguard-go: throughput x{f[0] / w[0]:.2f} (1 stream), "
      f"x{f[2] / w[2]:.2f} (4 streams); CPU per Gbit x{f[1] / w[1]:.2f} (1 stream), x{f[3] / w[3]:.2f} (4 streams)")
PY
fi
