#!/usr/bin/env bash
# Relay benchmark (docs/performance.md): fz-relay, coturn's turnserver and the fz-forwarder floor,
# measured side by side in ONE run on loopback (127.0.0.1 only), with fz-turnbench as the TURN
# load generator, then coturn's turnutils_uclient as a second opinion, then memory and setup rate
# with 10,000 idle allocations. Prints one table per part, then the targets judged from them (met,
# not met, or not shown when the load generator was the limit); JSON lines of every measurement are kept
# in $FZ_BENCH_OUT (default .build/bench/<date>).
#
# Environment (all optional):
#   FZ_BENCH_QUICK=1              ~1.5-minute smoke version (100 B only, coarse search, 1,000 idle allocations)
#   FZ_BENCH_SIZES="100 1200"     payload sizes
#   FZ_BENCH_CLIENTS="offload plain"  client behaviours, each measured at every size: "offload" clients send
#                                 bursts with UDP GSO and read with UDP GRO (wireguard-go, quinn, Tailscale);
#                                 "plain" ones send and read one datagram per message (browsers' WebRTC)
#   FZ_BENCH_ALLOCATIONS=64       allocations (client sockets) carrying traffic
#   FZ_BENCH_FIXED_RATE=40000     echoes/s of the like-with-like CPU run (lowered to 80 % of the
#                                 smallest loss-free rate if a server cannot sustain it)
#   FZ_BENCH_REPEATS=3            fixed-rate runs per server and size, interleaved; the table shows medians
#   FZ_BENCH_IDLE=10000           idle allocations for the memory part
#   FZ_BENCH_PIN=1                pin servers and load generators to separate CPUs (0: let the scheduler decide)
#   FZ_BENCH_SERVER_CPUS=1        taskset CPU list for the servers (default: the last CPU)
#   FZ_BENCH_GEN_CPUS=0           taskset CPU list for fz-turnbench, turnutils_uclient and turnutils_peer
#   FZ_BENCH_QUIET_PCT=15         wait before each measurement until other load is below this % of the machine
#   FZ_BENCH_QUIET_WAIT=90        ...but at most this many seconds (then measure anyway, with a warning)
#   FZ_BENCH_NOISY_RETRIES=2      a step during which other load exceeded 15 % of a core is run again (this often)
#   FZ_BENCH_PORT_BASE=36470      ports: fz-relay +0, coturn +10, forwarder +20 (its peer +21),
#                                 turnutils_peer +22, idle fz-relay +5, idle coturn +15
#   FZ_RELAY_THREADS=N            passed to fz-relay as --threads N (default when pinned: one per server CPU,
#                                 so its shards do not share a core; unpinned: fz-relay's own default)
#   COTURN_THREADS=N              passed to turnserver as --relay-threads N (default: coturn's own, one per CPU)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=${FZ_BENCH_QUICK:-0}
sizes=${FZ_BENCH_SIZES:-"100 1200"}
profiles=${FZ_BENCH_CLIENTS:-"offload plain"}
allocs=${FZ_BENCH_ALLOCATIONS:-64}
fixed_rate=${FZ_BENCH_FIXED_RATE:-40000}
idle=${FZ_BENCH_IDLE:-10000}
pin=${FZ_BENCH_PIN:-1}
quiet_pct=${FZ_BENCH_QUIET_PCT:-15}
quiet_wait=${FZ_BENCH_QUIET_WAIT:-90}
base=${FZ_BENCH_PORT_BASE:-36470}
fz_port=$base coturn_port=$((base + 10)) fwd_port=$((base + 20)) raw_peer_port=$((base + 21))
uclient_peer_port=$((base + 22)) idle_fz_port=$((base + 5)) idle_coturn_port=$((base + 15))
# Search: start, step window, precision, most steps; fixed-rate window; uclient messages per client.
search_args=(--search --search-start 40000 --search-factor 1.5 --step-duration 2 --warmup 0.5 --search-precision 0.05
    --search-steps 10)
fixed_duration=5
repeats=${FZ_BENCH_REPEATS:-3}
uclient_n=5000
uclient_sizes=$sizes
if [[ $quick == 1 ]]; then
    sizes=${FZ_BENCH_SIZES:-100}
    uclient_sizes=$sizes
    idle=${FZ_BENCH_IDLE:-1000}
    search_args=(--search --search-start 20000 --search-factor 2 --step-duration 1 --warmup 0.3 --drain 0.5
        --search-precision 0.3 --search-steps 5)
    fixed_duration=2
    repeats=${FZ_BENCH_REPEATS:-1}
    uclient_n=500
    quiet_wait=${FZ_BENCH_QUIET_WAIT:-0}
fi
run_started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
out=${FZ_BENCH_OUT:-.build/bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"

# --- everything this script starts is stopped by PID, also on failure or Ctrl-C -------------------
pids=()
tmp=$(mktemp -d)
stop_pid() {
    local p=$1
    kill "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
cleanup() {
    local p
    for p in "${pids[@]}"; do stop_pid "$p"; done
    pids=()
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
forget_pid() {
    local keep=() p
    for p in "${pids[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    pids=("${keep[@]}")
}
say() { echo "== $*" >&2; }
run_fg() { # runs a command in the background and waits: a signal then interrupts the wait at once
    local p rc=0
    "$@" &
    p=$!
    pids+=("$p")
    wait "$p" || rc=$?
    forget_pid "$p"
    return "$rc"
}

# --- dependencies and binaries --------------------------------------------------------------------
scripts/deps.sh build >&2
if ! command -v turnserver >/dev/null || ! command -v turnutils_uclient >/dev/null; then
    say "installing coturn"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends coturn >/dev/null
fi
command -v python3 >/dev/null || { echo "python3 is needed for the tables" >&2; exit 1; }
say "building release binaries"
for product in fz-relay fz-turnbench fz-forwarder; do
    swift build -c release --product "$product" >&2
done
bin_dir=$(swift build -c release --show-bin-path)
# Private copies: a concurrent rebuild cannot swap a binary under a running measurement.
for product in fz-relay fz-turnbench fz-forwarder; do cp "$bin_dir/$product" "$tmp/"; done
relay="$tmp/fz-relay" bench="$tmp/fz-turnbench" forwarder="$tmp/fz-forwarder"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ncpu=$(nproc)
server_cpu=() gen_cpu=()
if [[ $pin == 1 && $ncpu -ge 2 ]]; then
    server_cpu=(taskset -c "${FZ_BENCH_SERVER_CPUS:-$((ncpu - 1))}") gen_cpu=(taskset -c "${FZ_BENCH_GEN_CPUS:-0}")
fi
pinning="no CPU pinning"
if [[ ${#server_cpu[@]} -gt 0 ]]; then
    pinning="servers on CPU ${server_cpu[2]}, load generators on CPU ${gen_cpu[2]}"
    FZ_RELAY_THREADS=${FZ_RELAY_THREADS:-$("${server_cpu[@]}" nproc)}
fi

# --- helpers --------------------------------------------------------------------------------------
cpu_sample() { # prints "busy total" jiffies of all CPUs
    local _ u n s i w q sq st
    read -r _ u n s i w q sq st _ </proc/stat
    echo "$((u + n + s + q + sq + st)) $((u + n + s + i + w + q + sq + st))"
}
wait_quiet() { # before a measurement: wait until nothing else (a compiler, say) is using the machine
    local waited=0 b1 t1 b2 t2 pct
    ((quiet_wait > 0)) || return 0
    while :; do
        read -r b1 t1 < <(cpu_sample); sleep 1; read -r b2 t2 < <(cpu_sample)
        pct=$((100 * (b2 - b1) / (t2 - t1 > 0 ? t2 - t1 : 1)))
        ((pct <= quiet_pct)) && return 0
        if ((waited >= quiet_wait)); then
            say "warning: the machine is still ${pct}% busy with other work; measuring anyway (see other_load_cores)"
            return 0
        fi
        ((waited == 0)) && say "waiting for other load (${pct}% of the machine) to settle"
        waited=$((waited + 1))
    done
}
wait_turn() { # $1 port: until the server answers a STUN Binding
    for _ in $(seq 100); do
        # (turnutils_stunclient never retransmits: a request sent before the bind waits forever.)
        timeout 1 turnutils_stunclient -p "$1" 127.0.0.1 >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "no STUN answer on 127.0.0.1:$1" >&2
    return 1
}
start_fz_relay() { # $1 port $2 min-port $3 max-port $4 log
    local threads=()
    [[ -n ${FZ_RELAY_THREADS:-} ]] && threads=(--threads "$FZ_RELAY_THREADS")
    # --unauth-rate 0: the 401 rate limit is per source IP, and every benchmark client is 127.0.0.1.
    "${server_cpu[@]}" "$relay" --listening-ip 127.0.0.1 --listening-port "$1" --user bench:bench --realm bench \
        --allow-loopback-peers --min-port "$2" --max-port "$3" --unauth-rate 0 "${threads[@]}" >"$4" 2>&1 &
    pids+=($!)
    started=$!
    wait_turn "$1"
}
start_coturn() { # $1 port $2 min-port $3 max-port $4 log
    local threads=()
    [[ -n ${COTURN_THREADS:-} ]] && threads=(--relay-threads "$COTURN_THREADS")
    # -n: no config file; quotas 0 = unlimited (explicitly, for the idle part).
    "${server_cpu[@]}" turnserver -n --listening-ip 127.0.0.1 -L 127.0.0.1 -p "$1" --relay-ip 127.0.0.1 \
        --min-port "$2" --max-port "$3" -u bench:bench -r bench --lt-cred-mech --allow-loopback-peers \
        --no-tls --no-dtls --no-cli --user-quota 0 --total-quota 0 --log-file stdout --simple-log \
        "${threads[@]}" >"$4" 2>&1 &
    pids+=($!)
    started=$!
    wait_turn "$1"
}
start_forwarder() { # $1 port $2 peer port $3 log
    "${server_cpu[@]}" "$forwarder" --listen "127.0.0.1:$1" --peer "127.0.0.1:$2" >"$3" 2>&1 &
    pids+=($!)
    started=$!
    for _ in $(seq 100); do grep -q "listening on" "$3" 2>/dev/null && return 0; sleep 0.1; done
    echo "fz-forwarder did not start:" >&2; cat "$3" >&2
    return 1
}
turnbench() { # $1 label $2 json file, rest: fz-turnbench arguments
    local label=$1 file=$2
    shift 2
    wait_quiet
    run_fg "${gen_cpu[@]}" "$bench" --label "$label" --allocations "$allocs" \
        --noisy-retries "${FZ_BENCH_NOISY_RETRIES:-2}" --quiet-wait "$((quiet_wait > 0 ? 20 : 0))" "$@" >"$file"
}

# --- part 1: throughput, CPU per datagram, latency (fz-turnbench) ---------------------------------
say "machine: $ncpu CPUs, kernel $(uname -r); $pinning"
start_fz_relay "$fz_port" 40000 49999 "$out/fz-relay.log"; fz_pid=$started
start_coturn "$coturn_port" 50000 59999 "$out/coturn.log"; coturn_pid=$started
start_forwarder "$fwd_port" "$raw_peer_port" "$out/forwarder.log"; fwd_pid=$started
servers=(fz-relay coturn floor)
echo "$allocs" >"$out/allocations"
server_args() { # $1 name: arguments that point fz-turnbench at that server
    case $1 in
        fz-relay) echo "--server 127.0.0.1:$fz_port --realm bench --server-pid $fz_pid" ;;
        coturn) echo "--server 127.0.0.1:$coturn_port --realm bench --server-pid $coturn_pid" ;;
        floor) echo "--server 127.0.0.1:$fwd_port --raw --peer 127.0.0.1:$raw_peer_port --server-pid $fwd_pid" ;;
    esac
}
cases=()
for profile in $profiles; do
    case $profile in offload | plain) ;; *) echo "FZ_BENCH_CLIENTS: unknown client behaviour '$profile' (offload, plain)" >&2; exit 2 ;; esac
    for size in $sizes; do cases+=("$profile-$size"); done
done
echo "${cases[*]}" >"$out/cases"
for key in "${cases[@]}"; do
    profile=${key%%-*} size=${key#*-}
    offload_arg=--offload
    [[ $profile == plain ]] && offload_arg=--no-offload
    for s in "${servers[@]}"; do
        say "search: $s, $size B, $profile clients"
        # shellcheck disable=SC2046
        turnbench "$s" "$out/search-$s-$key.json" $(server_args "$s") --size "$size" "$offload_arg" "${search_args[@]}"
    done
    rate=$(python3 - "$out" "$key" "$fixed_rate" <<'EOF'
import json, sys
out, key, fixed = sys.argv[1], sys.argv[2], float(sys.argv[3])
rates = []
for s in ("fz-relay", "coturn", "floor"):
    r = json.loads(open(f"{out}/search-{s}-{key}.json").read().splitlines()[-1])["search"]["loss_free_rate"]
    if r: rates.append(r)
low = min(rates) if rates else fixed
print(int(fixed if fixed <= 0.8 * low else round(0.8 * low, -3)))
EOF
)
    echo "$rate" >"$out/fixed-rate-$key"
    # Interleaved repeats: the table shows medians (and the CPU range), so one unlucky window on a
    # shared VM does not decide a ratio.
    for k in $(seq "$repeats"); do
        for s in "${servers[@]}"; do
            say "fixed rate: $s, $size B, $profile clients, $rate echoes/s ($k/$repeats)"
            # shellcheck disable=SC2046
            turnbench "$s" "$out/fixed-$s-$key-$k.json" $(server_args "$s") --size "$size" "$offload_arg" --rate "$rate" \
                --duration "$fixed_duration"
        done
    done
done

# --- part 2: coturn's own client as a second opinion ----------------------------------------------
"${gen_cpu[@]}" turnutils_peer -L 127.0.0.1 -p "$uclient_peer_port" >/dev/null 2>&1 &
pids+=($!)
peer_pid=$!
first_size=1
for size in $uclient_sizes; do
    # Fresh servers for each size: a client that gets an earlier client's port (and so its
    # 5-tuple) meets whatever allocation that client left behind; coturn once refused a whole
    # uclient run that way ("channel bind: error 400") and it sent nothing.
    if [[ $first_size == 0 ]]; then
        for p in "$fz_pid" "$coturn_pid"; do stop_pid "$p"; forget_pid "$p"; done
        start_fz_relay "$fz_port" 40000 49999 "$out/fz-relay-uclient-$size.log"; fz_pid=$started
        start_coturn "$coturn_port" 50000 59999 "$out/coturn-uclient-$size.log"; coturn_pid=$started
    fi
    first_size=0
    for s in fz-relay coturn; do
        port=$fz_port pid=$fz_pid
        [[ $s == coturn ]] && port=$coturn_port pid=$coturn_pid
        say "turnutils_uclient: $s, $size B"
        wait_quiet
        cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        t0=$(date +%s.%N)
        run_fg "${gen_cpu[@]}" turnutils_uclient -u bench -w bench -p "$port" -e 127.0.0.1 -r "$uclient_peer_port" \
            -m 40 -n "$uclient_n" -z 1 -l "$size" -c 127.0.0.1 >"$out/uclient-$s-$size.log" 2>&1 || true
        t1=$(date +%s.%N)
        cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        echo "$cpu0 $cpu1 $t0 $t1 $(getconf CLK_TCK)" >"$out/uclient-$s-$size.cpu"
    done
done
stop_pid "$peer_pid"; forget_pid "$peer_pid"
for p in "$fz_pid" "$coturn_pid" "$fwd_pid"; do stop_pid "$p"; forget_pid "$p"; done

# --- part 3: memory and setup rate with idle allocations (fresh servers) --------------------------
# A wide relay port range and client ports outside it (a relay IP holds at most ~16k allocations
# in the default 49152-65535 range; 10,000 need room).
say "idle: $idle allocations with one channel each"
start_fz_relay "$idle_fz_port" 40000 59999 "$out/fz-relay-idle.log"; p=$started
sleep 1
turnbench fz-relay "$out/idle-fz-relay.json" --server "127.0.0.1:$idle_fz_port" --realm bench --server-pid "$p" \
    --idle-allocations "$idle" --client-ports 10000-29999 --hold 3 --no-release
stop_pid "$p"; forget_pid "$p"
start_coturn "$idle_coturn_port" 40000 59999 "$out/coturn-idle.log"; p=$started
sleep 1
turnbench coturn "$out/idle-coturn.json" --server "127.0.0.1:$idle_coturn_port" --realm bench --server-pid "$p" \
    --idle-allocations "$idle" --client-ports 10000-29999 --hold 3 --no-release
stop_pid "$p"; forget_pid "$p"

# --- the tables -----------------------------------------------------------------------------------
fz_threads=$(grep -o 'threads=[0-9]*' "$out/fz-relay.log" | head -1 | cut -d= -f2 || true)
coturn_threads=${COTURN_THREADS:-"default (one per CPU)"}
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$([[ -n $(git status --porcelain 2>/dev/null) ]] && echo "+local changes" || true)"
python3 - "$out" "$sizes" "$uclient_sizes" "$run_started" "$ncpu" "$(uname -r)" "$pinning" "${fz_threads:-?}" \
    "$coturn_threads" "$commit" "$(turnserver --version 2>/dev/null | head -1)" <<'EOF' | tee "$out/tables.md"
import glob, json, os, sys
out, sizes, usizes, started, ncpu, kernel, pinning, fz_threads, coturn_threads, commit, coturn_version = sys.argv[1:12]
def load(name):
    try:
        return json.loads(open(f"{out}/{name}.json").read().splitlines()[-1])
    except Exception:
        return None
def num(v, d=0):
    return "n/a" if v is None else f"{v:,.{d}f}"
def ratio(a, b):
    return "n/a" if not a or not b else f"{a / b:.2f}"

print(f"fz relay benchmark, {started}: {ncpu} CPUs, kernel {kernel}, {pinning}; "
      f"fz-relay {commit} with {fz_threads} thread(s), coturn {coturn_version} with {coturn_threads} relay threads, "
      f"fz-forwarder (one thread) as the floor; {open(f'{out}/allocations').read().strip()} allocations, ChannelData.")
print()
cases = open(f"{out}/cases").read().split()
print("| clients | size | server | loss-free relayed datagrams/s | next step failed on | CPU us per relayed datagram: median (user + kernel) [range] | p50 us | p99 us | server CPU | other load (max) |")
print("| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
ratios = []
def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
for key in cases:
    profile, size = key.split("-", 1)
    rate = open(f"{out}/fixed-rate-{key}").read().strip()
    row = {}
    for s in ("fz-relay", "coturn", "floor"):
        se = load(f"search-{s}-{key}")
        runs = [j["result"] for f in sorted(glob.glob(f"{out}/fixed-{s}-{key}-*.json"))
                if (j := load(os.path.basename(f)[:-5])) and j.get("result")]
        lf = se and se["search"]["loss_free_relayed_per_s"]
        best = se and se.get("result")
        mark_lf = "*" if best and best.get("noisy") else ""
        mark_fx = "*" if any(r.get("noisy") for r in runs) else ""
        cpus = [r["cpu_us_per_relayed"] for r in runs]
        cpu = median(cpus)
        user = median([r.get("user_us_per_relayed") for r in runs])
        spread = f" [{min(cpus):.2f}-{max(cpus):.2f}]" if len(cpus) > 1 else ""
        split = f" ({user:.2f} + {cpu - user:.2f})" if cpu is not None and user is not None else ""
        row[s] = (lf, cpu, se and se["search"].get("limited_by"))
        others = [st.get("other_load_cores") for st in (se["search"]["steps"] if se else [])] + [r.get("other_load_cores") for r in runs]
        others = [o for o in others if o is not None]
        limited = se and se["search"].get("limited_by") or "n/a"
        p50 = median([r["latency_us"]["p50"] for r in runs])
        p99 = median([r["latency_us"]["p99"] for r in runs])
        cores = median([r.get("server_cpu_cores") for r in runs])
        print(f"| {profile} | {size} B | {s} | {num(lf)}{mark_lf} | {limited} | {num(cpu, 2)}{mark_fx}{split}{spread} | {num(p50, 0)} "
              f"| {num(p99, 0)} | {num(cores and 100 * cores, 0)} % "
              f"| {num(max(others) * 100 if others else None, 0)} % |")
    ratios.append((profile, size, rate, row))
print()
print("| clients | size | fz/coturn loss-free rate | fz/coturn CPU per datagram | fz/floor loss-free rate | fz/floor CPU per datagram |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for profile, size, rate, row in ratios:
    print(f"| {profile} | {size} B | {ratio(row['fz-relay'][0], row['coturn'][0])} | {ratio(row['fz-relay'][1], row['coturn'][1])} "
          f"| {ratio(row['fz-relay'][0], row['floor'][0])} | {ratio(row['fz-relay'][1], row['floor'][1])} |")
print()
print("CPU per datagram, latency and server CPU are medians of the fixed-rate runs at "
      + ", ".join(f"{open(f'{out}/fixed-rate-{k}').read().strip()} echoes/s ({k.replace('-', ' clients, ')} B)" for k in cases)
      + "; loss-free rates from the searches (a rate with 'n/a' as the failing side passed every step: a lower bound)."
      + " * = other load above 15 % of a core even after retries. offload clients send bursts with UDP GSO and read with"
      + " UDP GRO (wireguard-go, quinn, Tailscale); plain clients send and read one datagram per message (browsers).")
print()
print("turnutils_uclient (-m 40 -z 1 -c, echo turnutils_peer): totals and peak")
print()
print("| size | server | sent | received | lost | avg RTT ms | peak echoes/s | server CPU us per relayed datagram |")
print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
import re
for size in usizes.split():
    for s in ("fz-relay", "coturn"):
        try:
            log = open(f"{out}/uclient-{s}-{size}.log").read()
        except Exception:
            continue
        tot = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", log, re.M)
        sent, recv = (int(tot[-1][0]), int(tot[-1][1])) if tot else (None, None)
        lost = re.search(r"Total lost packets (\d+)", log)
        rtt = re.search(r"Average round trip delay ([\d.]+) ms", log)
        cum = [int(x) for x in re.findall(r"msz=\d+, tot_send_msgs=\d+, tot_recv_msgs=(\d+)", log)]
        peak = max((b - a for a, b in zip(cum, cum[1:])), default=None)
        c0, c1, t0, t1, hz = open(f"{out}/uclient-{s}-{size}.cpu").read().split()
        cpu_us = (float(c1) - float(c0)) * 1e6 / float(hz)
        per = cpu_us / (2 * recv) if recv else None
        print(f"| {size} B | {s} | {num(sent)} | {num(recv)} | {lost.group(1) if lost else 'n/a'} "
              f"| {rtt.group(1) if rtt else 'n/a'} | {num(peak)} | {num(per, 2)} |")
print()
print("Idle allocations (one channel each): memory and setup rate")
print()
print("| server | allocations | RSS before KiB | RSS after KiB | KiB per allocation | allocations/s | channel binds/s | server CPU us per allocation |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for s in ("fz-relay", "coturn"):
    j = load(f"idle-{s}")
    i = j and j.get("idle") or {}
    print(f"| {s} | {num(i.get('bound'))} | {num(i.get('server_rss_kib_before'))} | {num(i.get('server_rss_kib_after'))} "
          f"| {num(i.get('kib_per_allocation'), 2)} | {num(i.get('allocations_per_s'))} | {num(i.get('binds_per_s'))} "
          f"| {num(i.get('server_cpu_us_per_allocation'), 1)} |")

# The issue's targets, judged from the figures above (the same run).
def verdict(value, ok, bound=None):
    if value is None:
        return "n/a"
    if ok(value):
        return f"{value:.2f}: met"
    return f"{value:.2f}: not shown ({bound}-bound)" if bound else f"{value:.2f}: not met"
print()
print("Against the targets (fz-relay vs the others in this run)")
print()
print("| target | " + " | ".join(f"{p} clients, {z} B" for p, z, _, _ in ratios) + " |")
print("| --- |" + " ---: |" * len(ratios))
def rat(a, b):
    return a / b if a and b else None
cells = []
for p, z, _, row in ratios:
    cells.append(verdict(rat(row["fz-relay"][1], row["coturn"][1]), lambda v: v <= 0.5))
print("| CPU per relayed datagram ≤ 0.5 × coturn's | " + " | ".join(cells) + " |")
cells = []
for p, z, _, row in ratios:
    # Below 2x with the load generator as the limit, fz-relay's rate is only a lower bound.
    bound = "generator" if row["fz-relay"][2] == "generator" else None
    cells.append(verdict(rat(row["fz-relay"][0], row["coturn"][0]), lambda v: v >= 2, bound))
print("| loss-free rate ≥ 2 × coturn's | " + " | ".join(cells) + " |")
cells = [verdict(rat(row["fz-relay"][1], row["floor"][1]), lambda v: v <= 1.3) for _, _, _, row in ratios]
print("| CPU per relayed datagram ≤ 1.3 × the floor's | " + " | ".join(cells) + " |")
i = (load("idle-fz-relay") or {}).get("idle") or {}
kib, rate = i.get("kib_per_allocation"), i.get("allocations_per_s")
print()
print(f"Idle allocations: {num(kib, 2)} KiB each (target ≤ 4: {'met' if kib is not None and kib <= 4 else 'not met'}); "
      f"{num(rate)} authenticated allocations/s (target ≥ 5,000: {'met' if rate is not None and rate >= 5000 else 'not met'}).")
EOF
say "JSON lines and logs: $out"
