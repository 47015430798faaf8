#!/usr/bin/env bash
# Control-plane benchmark (docs/performance.md, "## Portal"): fz-portal serve on loopback with a
# temporary SQLite database; 1 site, G gateways (site token, distinct public keys, answering
# `authorize` with `authorized`), C clients connected; then every client fires `request_access`
# in a closed loop (one intent outstanding per client) for D seconds. Prints one JSON line:
# intents granted per second, p50/p99 latency request_access -> access_granted, setup times.
#
# Environment (all optional):
#   FZ_PORTAL_BIN=PATH        binary to measure (default: swift build -c release --product fz-portal)
#   FZ_BENCH_GATEWAYS=100     gateways
#   FZ_BENCH_CLIENTS=1000     clients
#   FZ_BENCH_DURATION=10      seconds of load
#   FZ_BENCH_PROCS=2          Python worker processes driving the clients
#   FZ_BENCH_APPEND=1         append the result to docs/performance.md under "## Portal"
# Needs python3 with the `websockets` package (pip install websockets).
set -euo pipefail
cd "$(dirname "$0")/.."

gateways=${FZ_BENCH_GATEWAYS:-100}
clients=${FZ_BENCH_CLIENTS:-1000}
duration=${FZ_BENCH_DURATION:-10}
procs=${FZ_BENCH_PROCS:-2}
if [[ -z ${FZ_PORTAL_BIN:-} ]]; then
    swift build -c release --product fz-portal >&2
    FZ_PORTAL_BIN="$(swift build -c release --show-bin-path)/fz-portal"
fi
python3 -c 'import websockets' 2>/dev/null || { echo "pip install websockets" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || true

driver=$(mktemp --suffix=.py)
trap 'rm -f "$driver"' EXIT
cat >"$driver" <<'PY'
"""Load driver for fz-portal's control channel (scripts/bench-portal.sh runs it).

Starts `fz-portal serve` on loopback with a temporary SQLite database, creates 1 site, 1 resource,
1 group with 1 actor and a policy through the admin API, connects G gateways (site token,
distinct public keys; each answers `authorize` with `authorized`) and C clients (client token,
distinct public keys), then has every client fire `request_access` in a closed loop (one
outstanding intent per client) for D seconds. Reports intents granted per second and the p50/p99
latency from `request_access` sent to `access_granted` received, as one JSON line on stdout.

Clients are spread over several worker processes (--procs) so the Python side is less of a
bottleneck; gateways run in the parent.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from websockets.asyncio.client import connect as ws_connect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, token: str, method: str, path: str, body=None):
    req = urllib.request.Request(
        f"{base}/api/v1/{path}", method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        data = r.read()
        return json.loads(data) if data else None


def key() -> str:
    return urllib.parse.quote(base64.b64encode(os.urandom(32)).decode(), safe="")


async def connect_all(url_fmt: str, token: str, n: int, parallel: int = 32):
    sem = asyncio.Semaphore(parallel)
    headers = {"Authorization": f"Bearer {token}"}

    async def one(i):
        async with sem:
            ws = await ws_connect(url_fmt.format(key=key(), i=i), additional_headers=headers, max_queue=None,
                                  open_timeout=30, ping_interval=None)
            init = json.loads(await ws.recv())
            assert init["type"] == "init", init
            return ws

    return await asyncio.gather(*(one(i) for i in range(n)))


# --------------------------------------------------------------------------- clients (workers)


def client_worker(ws_base, token, n, resource_id, start_at, duration, conn_done, out):
    async def main():
        conns = await connect_all(ws_base + "/api/v1/ws/client?public_key={key}&name=bench-{i}", token, n)
        conn_done.put(os.getpid())
        while not start_at.value:  # the parent sets a common start once every worker is connected
            await asyncio.sleep(0.01)
        await asyncio.sleep(max(0.0, start_at.value - time.time()))
        end = start_at.value + duration
        lat: list[float] = []
        denied = 0
        req = json.dumps({"v": 1, "type": "request_access", "resource_id": resource_id})

        async def loop(ws):
            nonlocal denied
            while time.time() < end:
                t0 = time.perf_counter()
                await ws.send(req)
                while True:
                    m = json.loads(await ws.recv())
                    if m["type"] == "access_granted":
                        lat.append(time.perf_counter() - t0)
                        break
                    if m["type"] == "access_denied":
                        denied += 1
                        break

        await asyncio.gather(*(loop(ws) for ws in conns))
        out.put({"latencies": lat, "denied": denied})
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)

    asyncio.run(main())


# --------------------------------------------------------------------------- parent


def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


async def run_gateways(ws_base, token, n, stop: asyncio.Event, ready: asyncio.Event, counter: list):
    conns = await connect_all(ws_base + "/api/v1/ws/gateway?public_key={key}&name=gw-{i}", token, n)
    ready.set()

    async def answer(ws):
        try:
            async for raw in ws:
                m = json.loads(raw)
                if m["type"] == "authorize":
                    counter[0] += 1
                    await ws.send(json.dumps({"v": 1, "type": "authorized", "request_id": m["request_id"]}))
        except Exception:
            pass

    tasks = [asyncio.create_task(answer(ws)) for ws in conns]
    await stop.wait()
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
    for t in tasks:
        t.cancel()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="fz-portal binary")
    ap.add_argument("--gateways", type=int, default=100)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--procs", type=int, default=2, help="client worker processes")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    tmp = tempfile.mkdtemp(prefix="fz-portal-bench-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ws_base = f"ws://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [args.bin, "serve", "--listen", f"127.0.0.1:{port}", "--database-url", f"sqlite://{tmp}/portal.sqlite",
         "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    workers: list[mp.Process] = []
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(30):
            sys.exit("fz-portal printed no admin token")
        admin = proc.stdout.readline().decode().rsplit(" ", 1)[1].strip()
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/readyz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("fz-portal not ready")
                time.sleep(0.05)

        site = api(base, admin, "POST", "sites", {"name": "bench"})
        res = api(base, admin, "POST", "resources", {"name": "db", "site_id": site["id"], "address": "10.0.0.0/24"})
        grp = api(base, admin, "POST", "groups", {"name": "bench"})
        act = api(base, admin, "POST", "actors", {"name": "bench"})
        api(base, admin, "POST", f"groups/{grp['id']}/members", {"actor_id": act["id"]})
        api(base, admin, "POST", "policies", {"group_id": grp["id"], "resource_id": res["id"]})
        site_token = api(base, admin, "POST", "tokens", {"name": "gw", "scope": "site", "subject": site["id"]})["secret"]
        client_token = api(base, admin, "POST", "tokens", {"name": "cl", "scope": "client", "subject": act["id"]})["secret"]

        ctx = mp.get_context("fork")
        start_at = ctx.Value("d", 0.0)
        conn_done, out = ctx.Queue(), ctx.Queue()
        per = [args.clients // args.procs + (1 if i < args.clients % args.procs else 0) for i in range(args.procs)]

        async def parent():
            stop, ready = asyncio.Event(), asyncio.Event()
            counter = [0]
            t_setup = time.perf_counter()
            gw_task = asyncio.create_task(run_gateways(ws_base, site_token, args.gateways, stop, ready, counter))
            await asyncio.wait_for(ready.wait(), 120)
            t_gw = time.perf_counter() - t_setup
            for n in per:
                w = ctx.Process(target=client_worker,
                                args=(ws_base, client_token, n, res["id"], start_at, args.duration, conn_done, out))
                w.start()
                workers.append(w)
            loop = asyncio.get_running_loop()
            for _ in per:
                await loop.run_in_executor(None, conn_done.get, True, 300)
            t_cl = time.perf_counter() - t_setup - t_gw
            start_at.value = time.time() + 0.5
            await asyncio.sleep(0.5)
            cpu0 = cpu_seconds(proc.pid)
            await asyncio.sleep(args.duration)
            cpu = cpu_seconds(proc.pid) - cpu0
            results = [await loop.run_in_executor(None, out.get, True, args.duration + 120) for _ in per]
            stop.set()
            await gw_task
            return results, counter[0], t_gw, t_cl, cpu

        results, authorizes, t_gw, t_cl, cpu = asyncio.run(parent())
        lat = sorted(x for r in results for x in r["latencies"])
        summary = {
            "gateways": args.gateways, "clients": args.clients, "duration_s": args.duration, "client_procs": args.procs,
            "granted": len(lat), "denied": sum(r["denied"] for r in results), "authorize_seen": authorizes,
            "granted_per_s": round(len(lat) / args.duration, 1),
            "p50_ms": round(pct(lat, 50) * 1000, 2), "p99_ms": round(pct(lat, 99) * 1000, 2),
            "max_ms": round(lat[-1] * 1000, 2) if lat else None,
            "portal_cpu_pct": round(100 * cpu / args.duration, 1), "cpus": os.cpu_count(),
            "connect_gateways_s": round(t_gw, 2), "connect_clients_s": round(t_cl, 2),
        }
        print(json.dumps(summary))
    finally:
        for w in workers:
            if w.is_alive():
                os.kill(w.pid, signal.SIGTERM)
            w.join(5)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
PY

result=$(python3 "$driver" --bin "$FZ_PORTAL_BIN" --gateways "$gateways" --clients "$clients" --duration "$duration" --procs "$procs")
echo "$result"

if [[ ${FZ_BENCH_APPEND:-0} == 1 ]] && [[ $(grep '^## ' docs/performance.md | tail -1) != "## Portal" ]]; then
    echo "not appending: the last section of docs/performance.md is not '## Portal'" >&2
elif [[ ${FZ_BENCH_APPEND:-0} == 1 ]]; then
    cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
    {
        echo
        echo "### $(date -u +%Y-%m-%d) — $(nproc) × $cpu, $(uname -sr)"
        echo "\`FZ_BENCH_GATEWAYS=$gateways FZ_BENCH_CLIENTS=$clients FZ_BENCH_DURATION=$duration scripts/bench-portal.sh\` ($FZ_PORTAL_BIN)"
        echo
        echo '```'
        echo "$result"
        echo '```'
    } >>docs/performance.md
fi
