#!/usr/bin/env bash
# The relay-only demo (fz-relay as a coturn replacement): builds fz-relay, starts it on loopback with its embedded
# defaults plus a demo user, and drives it with coturn's own clients: a STUN binding, then 4 TURN
# clients relaying 200 messages each through channels and through Send indications to an echo
# peer. Prints what happened and stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test >/dev/null
swift build --product fz-relay >&2
bin="$(swift build --show-bin-path)/fz-relay"
port=${FZ_DEMO_PORT:-34780}
peer_port=$((port + 10))
metrics_port=$((port + 20))
log=$(mktemp)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -f "$log"
}
trap cleanup EXIT

relay_pid=0
"$bin" --listening-ip 127.0.0.1 --listening-port "$port" --realm demo --user demo:demo-password \
    --allow-loopback-peers --min-port 40000 --max-port 49999 --metrics-listen "127.0.0.1:$metrics_port" 2>"$log" &
relay_pid=$!
pids+=($relay_pid)
turnutils_peer -L 127.0.0.1 -p "$peer_port" >/dev/null 2>&1 &
pids+=($!)
ready=0
for _ in $(seq 50); do
    if ! kill -0 "$relay_pid" 2>/dev/null; then
        echo "fz-relay did not start (is port $port free? set FZ_DEMO_PORT):" >&2
        cat "$log" >&2
        exit 1
    fi
    if timeout 1 turnutils_stunclient -p "$port" 127.0.0.1 >/dev/null 2>&1; then
        ready=1
        break
    fi
done
((ready)) || { echo "fz-relay does not answer on 127.0.0.1:$port" >&2; cat "$log" >&2; exit 1; }

echo "== fz-relay listening on 127.0.0.1:$port (realm demo, user demo)"
echo "== STUN binding (turnutils_stunclient):"
timeout 5 turnutils_stunclient -p "$port" 127.0.0.1 2>&1 | grep "reflexive" | head -n 1
for mode in channels send-indications; do
    flag=""
    [[ $mode == send-indications ]] && flag="-s"
    echo "== TURN relay through $mode (turnutils_uclient -m 4 -n 200 -l 120 $flag):"
    timeout 60 turnutils_uclient -u demo -w demo-password -p "$port" -e 127.0.0.1 -r "$peer_port" \
        -m 4 -n 200 -l 120 -c $flag 127.0.0.1 2>&1 \
        | grep -E "Total (transmit time|lost packets)|Average round trip|start_mclient: tot_send_msgs" | sed 's/^[0-9]*: : /   /'
done
echo "== relay metrics (selected):"
curl -s "127.0.0.1:$metrics_port/metrics" | grep -E "^fz_relay_(allocations_created|channels_bound|channel_data_in|send_indications_in|peer_packets_in)" | sed 's/^/   /' || true
echo "== relay log:"
sed 's/^/   /' "$log" | tail -n 12
