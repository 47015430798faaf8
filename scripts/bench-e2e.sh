#!/usr/bin/env bash
# End-to-end benchmark (docs/performance.md, "## End to end (the lab)"): the four daemons in the
# lab of lab/fzlab.py behind real Linux NAT. Time to connect (first packet -> first HTTP byte,
# direct and relayed, over FZ_BENCH_CONNECTIONS new connections), downtime at gateway and relay
# failover (a 10 ms UDP probe stream, FZ_BENCH_KILLS kill -9 each), iperf3 direct and relayed.
# Needs root. FZ_BENCH_APPEND=1 writes the table into docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test >/dev/null
for product in fz-portal fz-relay fz-gateway fz-client; do
    swift build -c release --product "$product" >&2
done
doc=()
[[ ${FZ_BENCH_APPEND:-0} == 1 ]] && doc=(--write-doc docs/performance.md)
exec python3 lab/bench.py --bin-dir "$(swift build -c release --show-bin-path)" \
    --connections "${FZ_BENCH_CONNECTIONS:-20}" --kills "${FZ_BENCH_KILLS:-5}" "${doc[@]}"
