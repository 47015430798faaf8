"""fz-gateway's WireGuard data plane against wireguard-go (Debian's), in two network namespaces.

    swift build --product fz-gateway          # or set FZ_GATEWAY_BIN
    sudo python3 -m pytest -q Tests/interop/test_wireguard.py

Needs root (namespaces, TUN), `wireguard-go`, `wireguard-tools`, `iperf3` and `ping` (installed with
apt-get --no-install-recommends when missing; the tests skip when that is impossible).

Per test: namespaces `fzwg-a-<pid>-<n>` (fz-gateway) and `fzwg-b-<pid>-<n>` (wireguard-go) joined by a
veth pair on 10.231.0.0/24; tunnel addresses 10.232.0.1 (fz) and 10.232.0.2 (wireguard-go). Only
10.x addresses are used (the handshake flood adds 10.231.0.9 in B's namespace). Every process is
stopped by its PID and both namespaces (with the veth and TUN interfaces inside them) are deleted
at the end of the test, pass or fail. The flood runs in a thread of the test process, bounded in
time and count.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, kill_process, parse_metrics, wait_for

UNDERLAY_A = "10.231.0.1"
UNDERLAY_B = "10.231.0.2"
UNDERLAY_A_MOVED = "10.231.0.4"
TUNNEL_A = "10.232.0.1"
TUNNEL_B = "10.232.0.2"
# IPv6 inside the tunnel only (unique local addresses on the test's own TUN interfaces): the
# kernel's TCPv6 segmentation and GRO paths through fz-gateway's offloads.
TUNNEL6_A = "fd7a:f2::1"
TUNNEL6_B = "fd7a:f2::2"
PORT_A = 51820
PORT_B = 51821
PORT_B_MOVED = 51822
# An IPv6 underlay (unique local addresses on the test's own veth pair): outer UDP over IPv6.
UNDERLAY6_A = "fd7a:f1::1"
UNDERLAY6_B = "fd7a:f1::2"
UNDERLAY_FLOOD = "10.231.0.9"  # an extra address on wireguard-go's side: the flood's (forged) source
IPERF_SECONDS = 10  # the issue asks for a 10 s run each way
# A debug build of fz-gateway moves far less than a release build; this only catches a data plane
# that is broken (stalls, heavy loss), not a slow one. scripts/bench-wireguard.sh measures.
IPERF_MIN_MBITS = 20.0

_counter = itertools.count()

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and TUN")


def run(*args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
    return out


TOOLS = {"wireguard-go": "wireguard-go", "wg": "wireguard-tools", "iperf3": "iperf3", "ping": "iputils-ping"}


def ensure_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not missing:
        return
    try:
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=300, check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", *sorted({TOOLS[t] for t in missing})],
            capture_output=True, timeout=600, check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"{', '.join(missing)} missing and apt-get could not install them: {e}")
    still = [t for t in TOOLS if shutil.which(t) is None]
    if still:
        pytest.skip(f"{', '.join(still)} still missing after apt-get install")


_binary: str | None = None


def gateway_bin() -> str:
    global _binary
    if _binary:
        return _binary
    path = os.environ.get("FZ_GATEWAY_BIN")
    if not path:
        build = subprocess.run(["swift", "build", "--product", "fz-gateway"], cwd=REPO, capture_output=True,
                               text=True, timeout=1800)
        if build.returncode != 0:
            pytest.fail(f"swift build --product fz-gateway failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}")
        bin_path = run("swift", "build", "--show-bin-path", timeout=300).stdout.strip()
        path = os.path.join(bin_path, "fz-gateway")
    if not os.access(path, os.X_OK):
        pytest.fail(f"fz-gateway binary not found at {path}")
    _binary = path
    return path


class NotifyListener:
    """A fake systemd NOTIFY_SOCKET (a path socket, so it is reachable from any namespace)."""

    def __init__(self, directory: Path):
        self.path = str(directory / f"notify-{next(_counter)}.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o666)  # an unprivileged fz-gateway must be able to send to it
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def poll(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def saw(self, text: str) -> bool:
        return any(text in m for m in self.poll())

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class Lab:
    """Two namespaces, a veth pair, keys; fz-gateway in A, wireguard-go in B."""

    def __init__(self, workdir: Path):
        n = next(_counter)
        pid = os.getpid()
        self.workdir = workdir
        self.ns_a = f"fzwg-a-{pid}-{n}"
        self.ns_b = f"fzwg-b-{pid}-{n}"
        tag = f"{pid % 100000}{n}"[-8:]
        self.veth_a = f"fzva{tag}"
        self.veth_b = f"fzvb{tag}"
        self.if_a = f"fza{tag}"  # fz-gateway's TUN
        self.if_b = f"wgb{tag}"  # wireguard-go's TUN: unique, its socket lives in /var/run/wireguard
        self.procs: list[subprocess.Popen] = []
        self.fz: subprocess.Popen | None = None
        self.fz_log: Path | None = None
        self.notify: NotifyListener | None = None
        self.namespaces: list[str] = []

        for ns in (self.ns_a, self.ns_b):
            run("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "link", "add", self.veth_a, "netns", self.ns_a, "type", "veth", "peer", "name", self.veth_b,
            "netns", self.ns_b)
        run("ip", "-n", self.ns_a, "addr", "add", f"{UNDERLAY_A}/24", "dev", self.veth_a)
        run("ip", "-n", self.ns_b, "addr", "add", f"{UNDERLAY_B}/24", "dev", self.veth_b)
        run("ip", "-n", self.ns_a, "link", "set", self.veth_a, "up")
        run("ip", "-n", self.ns_b, "link", "set", self.veth_b, "up")

        self.priv_a, self.pub_a = self.keypair()
        self.priv_b, self.pub_b = self.keypair()
        self.psk = run("wg", "genpsk").stdout.strip()

    @staticmethod
    def keypair() -> tuple[str, str]:
        private = run("wg", "genkey").stdout.strip()
        public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True,
                                check=True).stdout.strip()
        return private, public

    def ns(self, ns: str, *args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", ns, *args, check=check, timeout=timeout)

    # ------------------------------------------------------------------ wireguard-go (B)

    def add_ipv6_underlay(self) -> None:
        """IPv6 addresses on the veth pair (no duplicate address detection: usable at once)."""
        self.ns(self.ns_a, "ip", "addr", "add", f"{UNDERLAY6_A}/64", "dev", self.veth_a, "nodad")
        self.ns(self.ns_b, "ip", "addr", "add", f"{UNDERLAY6_B}/64", "dev", self.veth_b, "nodad")

    def start_wireguard_go(self, endpoint: bool, endpoint_address: str | None = None) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns_b, "wireguard-go", "-f", self.if_b],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        sock = f"/var/run/wireguard/{self.if_b}.sock"
        wait_for(lambda: os.path.exists(sock) or proc.poll() is not None, 10, what="wireguard-go's socket")
        assert proc.poll() is None, f"wireguard-go exited: {proc.stderr.read()}"
        key_file = self.workdir / "b.key"
        key_file.write_text(self.priv_b + "\n")
        psk_file = self.workdir / "psk"
        psk_file.write_text(self.psk + "\n")
        args = ["wg", "set", self.if_b, "private-key", str(key_file), "listen-port", str(PORT_B),
                "peer", self.pub_a, "preshared-key", str(psk_file), "allowed-ips", f"{TUNNEL_A}/32"]
        if endpoint:
            args += ["endpoint", endpoint_address or f"{UNDERLAY_A}:{PORT_A}"]
        self.ns(self.ns_b, *args)
        self.ns(self.ns_b, "ip", "addr", "add", f"{TUNNEL_B}/24", "dev", self.if_b)
        self.ns(self.ns_b, "ip", "link", "set", self.if_b, "up")

    def wg_latest_handshake(self) -> int:
        out = self.ns(self.ns_b, "wg", "show", self.if_b, "latest-handshakes", check=False).stdout.split()
        return int(out[1]) if len(out) >= 2 else 0

    def wg_endpoint(self) -> str:
        out = self.ns(self.ns_b, "wg", "show", self.if_b, "endpoints", check=False).stdout.split()
        return out[1] if len(out) >= 2 else ""

    # ------------------------------------------------------------------ fz-gateway (A)

    def write_fz_config(self, endpoint: bool, keepalive: int | None = None,
                        endpoint_address: str | None = None) -> Path:
        lines = [
            "# fz-gateway static-peer test configuration",
            "[Interface]",
            f"PrivateKey = {self.priv_a}",
            f"ListenPort = {PORT_A}",
            f"Address = {TUNNEL_A}/24, {TUNNEL6_A}/64",
            "MTU = 1420",
            "",
            "[Peer]  # wireguard-go",
            f"PublicKey = {self.pub_b}",
            f"PresharedKey = {self.psk}",
            f"AllowedIPs = {TUNNEL_B}/32, {TUNNEL6_B}/128",
        ]
        if endpoint:
            lines.append(f"Endpoint = {endpoint_address or f'{UNDERLAY_B}:{PORT_B}'}")
        if keepalive:
            lines.append(f"PersistentKeepalive = {keepalive}")
        path = self.workdir / "fz.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_fz(self, endpoint: bool, keepalive: int | None = None, extra: tuple[str, ...] = (),
                 wrapper: tuple[str, ...] = (), config: Path | None = None,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
        config = config or self.write_fz_config(endpoint, keepalive)
        if self.notify:
            self.notify.close()
        self.notify = NotifyListener(self.workdir)
        self.fz_log = self.workdir / f"fz-{next(_counter)}.log"
        log = open(self.fz_log, "w")
        env = {**os.environ, **(env or {}), "NOTIFY_SOCKET": self.notify.path}
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_a, *wrapper, gateway_bin(), "--wg-config", str(config), "--interface",
             self.if_a, "--log-level", "debug", *extra],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.procs.append(proc)
        self.fz = proc
        wait_for(lambda: self.notify.saw("READY=1") or proc.poll() is not None, 15, what="fz-gateway READY=1")
        assert proc.poll() is None, f"fz-gateway exited {proc.returncode}:\n{self.fz_output()}"
        return proc

    def start_fz_in_b(self) -> subprocess.Popen:
        """A second fz-gateway in B, in wireguard-go's place (same keys, addresses and port)."""
        config = self.workdir / "fz-b.conf"
        config.write_text("\n".join([
            "[Interface]", f"PrivateKey = {self.priv_b}", f"ListenPort = {PORT_B}", f"Address = {TUNNEL_B}/24, {TUNNEL6_B}/64",
            "MTU = 1420", "[Peer]", f"PublicKey = {self.pub_a}", f"PresharedKey = {self.psk}",
            f"AllowedIPs = {TUNNEL_A}/32, {TUNNEL6_A}/128", f"Endpoint = {UNDERLAY_A}:{PORT_A}"]) + "\n")
        notify = NotifyListener(self.workdir)
        self.fz_b_log = self.workdir / f"fz-b-{next(_counter)}.log"
        with open(self.fz_b_log, "w") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns_b, gateway_bin(), "--wg-config", str(config), "--interface",
                 self.if_b, "--log-level", "info"],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NOTIFY_SOCKET": notify.path})
        self.procs.append(proc)
        self.fz_b = proc
        try:
            wait_for(lambda: notify.saw("READY=1") or proc.poll() is not None, 15, what="fz-gateway B READY=1")
        finally:
            notify.close()
        assert proc.poll() is None, f"fz-gateway B exited {proc.returncode}:\n{self.fz_b_log.read_text()}"
        return proc

    def stop_fz(self) -> int | None:
        assert self.fz is not None
        code = kill_process(self.fz)
        self.fz = None
        return code

    def fz_output(self) -> str:
        return self.fz_log.read_text() if self.fz_log and self.fz_log.exists() else ""

    def link_exists(self, ns: str, name: str) -> bool:
        return run("ip", "-n", ns, "link", "show", name, check=False).returncode == 0

    # ------------------------------------------------------------------ traffic

    def ping(self, ns: str, address: str, count: int = 3, deadline: int = 10) -> bool:
        out = self.ns(ns, "ping", "-c", str(count), "-i", "0.2", "-W", "1", "-w", str(deadline), address,
                      check=False, timeout=deadline + 5)
        return out.returncode == 0

    def iperf(self, reverse: bool, streams: int = 1) -> float:
        server = subprocess.Popen(["ip", "netns", "exec", self.ns_b, "iperf3", "-s", "-1", "-B", TUNNEL_B],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(server)
        try:
            out = None

            def attempt():
                nonlocal out
                args = ["iperf3", "-c", TUNNEL_B, "-t", str(IPERF_SECONDS), "-P", str(streams), "-J"]
                if reverse:
                    args.append("-R")
                out = self.ns(self.ns_a, *args, check=False, timeout=IPERF_SECONDS + 30)
                # The server may not listen yet; iperf3 3.12 then exits 0 with -J, the error in the JSON.
                return "Connection refused" not in out.stdout

            wait_for(attempt, 10, interval=0.2, what="iperf3 server")
            assert out is not None and out.returncode == 0, f"iperf3 failed: {out.stdout[-2000:]} {out.stderr}"
            result = json.loads(out.stdout)
            assert "sum_received" in result.get("end", {}), f"iperf3 gave no result: {out.stdout[-3000:]}"
            return result["end"]["sum_received"]["bits_per_second"] / 1e6
        finally:
            kill_process(server)

    def transfer(self, sender_ns: str, receiver_ns: str, receiver_address: str, size: int) -> tuple[str, str]:
        """Sends `size` pseudo-random bytes over one TCP connection from `sender_ns` to
        `receiver_address` (in `receiver_ns`); the SHA-256 the sender computed and the one of what
        arrived. A corrupted, reordered or lost byte makes them differ."""
        port = 5301 + next(_counter) % 100
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", receiver_ns, "python3", "-c", TRANSFER_RECEIVER, receiver_address, str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(receiver)
        try:
            wait_for(lambda: receiver.stdout.readline().strip() == "listening" or receiver.poll() is not None, 10,
                     what="the TCP receiver")
            sent = self.ns(sender_ns, "python3", "-c", TRANSFER_SENDER, receiver_address, str(port), str(size),
                           timeout=120)
            out, err = receiver.communicate(timeout=30)
            assert receiver.returncode == 0, err
            return sent.stdout.strip(), out.strip()
        finally:
            kill_process(receiver)

    # ------------------------------------------------------------------ cleanup

    def close(self) -> None:
        for proc in reversed(self.procs):
            try:
                kill_process(proc)
            except Exception:
                pass
        if self.notify:
            self.notify.close()
        for ns in self.namespaces:
            run("ip", "netns", "del", ns, check=False)
        try:
            os.unlink(f"/var/run/wireguard/{self.if_b}.sock")
        except FileNotFoundError:
            pass


# Pseudo-random payload (not one repeated block: a coalescer that mixed up segments must show).
TRANSFER_SENDER = r"""
import hashlib, random, socket, sys
address, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = random.Random(size).randbytes(size)
with socket.create_connection((address, port), timeout=60) as s:
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
print(len(data), hashlib.sha256(data).hexdigest())
"""
TRANSFER_RECEIVER = r"""
import hashlib, socket, sys
listener = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((sys.argv[1], int(sys.argv[2])))
listener.listen(1)
listener.settimeout(60)
print("listening", flush=True)
conn, _ = listener.accept()
conn.settimeout(60)
digest, total = hashlib.sha256(), 0
while chunk := conn.recv(1 << 20):
    digest.update(chunk)
    total += len(chunk)
conn.close()
print(total, digest.hexdigest())
"""
TRANSFER_BYTES = 24 << 20


@pytest.fixture
def lab():
    ensure_tools()
    gateway_bin()
    workdir = Path(tempfile.mkdtemp(prefix="fzwg-"))
    lab = Lab(workdir)
    try:
        yield lab
    finally:
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------- tests


def test_handshake_when_fz_gateway_initiates(lab):
    lab.start_wireguard_go(endpoint=False)
    lab.start_fz(endpoint=True)
    assert lab.ping(lab.ns_a, TUNNEL_B), lab.fz_output()
    assert lab.wg_latest_handshake() > 0
    assert lab.wg_endpoint() == f"{UNDERLAY_A}:{PORT_A}"


def test_handshake_when_wireguard_go_initiates(lab):
    lab.start_fz(endpoint=False)
    lab.start_wireguard_go(endpoint=True)
    assert lab.ping(lab.ns_b, TUNNEL_A), lab.fz_output()
    assert lab.wg_latest_handshake() > 0


def test_ping_both_ways(lab):
    lab.start_wireguard_go(endpoint=True)
    lab.start_fz(endpoint=True)
    assert lab.ping(lab.ns_a, TUNNEL_B, count=5), lab.fz_output()
    assert lab.ping(lab.ns_b, TUNNEL_A, count=5), lab.fz_output()
    # Large packets (padding, MTU): 1392 bytes of ICMP payload fill a 1420-byte tunnel MTU.
    out = lab.ns(lab.ns_a, "ping", "-c", "3", "-s", "1392", "-M", "do", "-W", "2", TUNNEL_B, check=False)
    assert out.returncode == 0, out.stdout


def test_fz_gateway_pings_the_systemd_watchdog_from_its_loop(lab):
    # WATCHDOG_USEC as systemd sets it for WatchdogSec=0.4s: WATCHDOG=1 every 0.2 s.
    lab.start_fz(endpoint=False, env={"WATCHDOG_USEC": "400000"})
    started = time.monotonic()
    wait_for(lambda: sum("WATCHDOG=1" in m for m in lab.notify.poll()) >= 5, 5, what="five WATCHDOG=1")
    elapsed = time.monotonic() - started
    assert elapsed >= 0.6, f"five pings in {elapsed:.2f}s: faster than every 0.2 s"
    assert lab.stop_fz() == 0
    assert any("STOPPING=1" in m for m in lab.notify.poll())


def test_metrics_endpoint_shows_per_peer_handshake_and_byte_counters(lab):
    lab.start_wireguard_go(endpoint=True)
    port = 19_000 + next(_counter) % 1000
    lab.start_fz(endpoint=True, extra=("--metrics-listen", f"127.0.0.1:{port}"))
    assert lab.ping(lab.ns_a, TUNNEL_B, count=3), lab.fz_output()
    key = lab.pub_b

    def scrape() -> dict[str, float]:
        out = lab.ns(lab.ns_a, "curl", "-sf", "--max-time", "2", f"http://127.0.0.1:{port}/metrics", check=False)
        return parse_metrics(out.stdout) if out.returncode == 0 else {}

    def series(name: str) -> str:
        return f'{name}{{public_key="{key}"}}'

    # Published by the loop thread once a second: wait for a snapshot taken after the pings.
    wait_for(lambda: scrape().get(series("fz_gateway_peer_received_packets_total"), 0) >= 3, 5,
             what="the ping replies in /metrics")
    m = scrape()
    assert m[series("fz_gateway_peer_handshakes_total")] >= 1, m
    assert m[series("fz_gateway_peer_sent_bytes_total")] > 0 and m[series("fz_gateway_peer_received_bytes_total")] > 0, m
    assert abs(m[series("fz_gateway_peer_last_handshake_seconds")] - time.time()) < 60, m
    assert m["fz_gateway_peers"] == 1, m
    assert 'fz_gateway_dropped_total{reason="source_not_allowed"}' in m, m
    assert lab.ns(lab.ns_a, "curl", "-sf", f"http://127.0.0.1:{port}/readyz").stdout == "ready\n"
    assert lab.stop_fz() == 0


def test_bad_metrics_listen_exits_non_zero_naming_the_flag(tmp_path):
    out = run(gateway_bin(), "--wg-config", str(tmp_path / "none.conf"), "--metrics-listen", "nowhere", check=False)
    assert out.returncode != 0 and "--metrics-listen" in out.stderr, out.stderr


def test_interface_is_configured_and_removed_on_sigterm(lab):
    lab.start_wireguard_go(endpoint=True)
    lab.start_fz(endpoint=True)
    link = lab.ns(lab.ns_a, "ip", "-d", "link", "show", lab.if_a).stdout
    assert "mtu 1420" in link and "tun" in link and ",UP" in link
    addrs = lab.ns(lab.ns_a, "ip", "-4", "addr", "show", lab.if_a).stdout
    assert f"{TUNNEL_A}/24" in addrs
    routes = lab.ns(lab.ns_a, "ip", "route", "show", "dev", lab.if_a).stdout
    assert TUNNEL_B in routes or "10.232.0.0/24" in routes
    assert lab.stop_fz() == 0
    assert not lab.link_exists(lab.ns_a, lab.if_a)


def test_iperf3_tcp_both_directions(lab):
    lab.start_wireguard_go(endpoint=True)
    lab.start_fz(endpoint=True)
    assert lab.ping(lab.ns_a, TUNNEL_B), lab.fz_output()
    upload = lab.iperf(reverse=False)
    download = lab.iperf(reverse=True)
    print(f"\niperf3 TCP {IPERF_SECONDS}s: fz->wireguard-go {upload:.0f} Mbit/s, "
          f"wireguard-go->fz {download:.0f} Mbit/s")
    assert upload > IPERF_MIN_MBITS, f"fz->wg {upload:.1f} Mbit/s"
    assert download > IPERF_MIN_MBITS, f"wg->fz {download:.1f} Mbit/s"


def test_tcp_bytes_arrive_intact_both_ways_through_fz_offloads_and_wireguard_go(lab):
    # fz-gateway's TUN offloads: the kernel hands it TCP segments of up to 64 KiB (cut by
    # TCPSegmenter, checksums computed) and it writes coalesced segments back (TCPCoalescer, with
    # partial checksums the kernel does not verify). Byte-exact transfers prove both.
    lab.start_wireguard_go(endpoint=True)
    lab.start_fz(endpoint=True)
    assert lab.ping(lab.ns_a, TUNNEL_B), lab.fz_output()
    sent, received = lab.transfer(lab.ns_a, lab.ns_b, TUNNEL_B, TRANSFER_BYTES)
    assert sent == received, f"fz->wireguard-go: sent {sent}, received {received}"
    sent, received = lab.transfer(lab.ns_b, lab.ns_a, TUNNEL_A, TRANSFER_BYTES)
    assert sent == received, f"wireguard-go->fz: sent {sent}, received {received}"
    assert lab.stop_fz() == 0
    counters = fz_counters(lab.fz_output())
    print(f"\nfz-gateway: {', '.join(f'{k}={counters[k]}' for k in ('tun_read', 'tso_read', 'tso_segments', 'tun_written', 'gso_written'))}")
    assert "offload=tso+gro" in lab.fz_output()
    assert counters["tso_read"] > 0 and counters["tso_segments"] > counters["tso_read"], counters
    assert counters["gso_written"] > 0, counters


def test_tcp_bytes_arrive_intact_between_two_fz_gateways_with_offloads(lab):
    # Both ends fz: UDP GSO on send and GRO on receive as well, on top of the TUN offloads.
    lab.start_fz(endpoint=True)
    lab.start_fz_in_b()
    assert lab.ping(lab.ns_a, TUNNEL_B), lab.fz_output()
    for sender, receiver, address in ((lab.ns_a, lab.ns_b, TUNNEL_B), (lab.ns_b, lab.ns_a, TUNNEL_A),
                                      (lab.ns_a, lab.ns_b, TUNNEL6_B), (lab.ns_b, lab.ns_a, TUNNEL6_A)):
        sent, received = lab.transfer(sender, receiver, address, TRANSFER_BYTES)
        assert sent == received, f"to {address}: sent {sent}, received {received}"
    upload = lab.iperf(reverse=False, streams=4)
    print(f"\niperf3 TCP {IPERF_SECONDS}s, 4 streams, fz->fz: {upload:.0f} Mbit/s")
    assert upload > IPERF_MIN_MBITS
    assert lab.stop_fz() == 0
    counters = fz_counters(lab.fz_output())
    assert counters["tso_read"] > 0 and counters["gso_written"] > 0, counters


def test_ipv6_underlay_against_wireguard_go(lab):
    # Outer UDP over IPv6 both ways: fz-gateway's IPv6 socket (with its GSO/GRO), endpoints
    # written as [address]:port, and IPv4 and IPv6 traffic inside the tunnel.
    lab.add_ipv6_underlay()
    lab.start_wireguard_go(endpoint=True, endpoint_address=f"[{UNDERLAY6_A}]:{PORT_A}")
    config = lab.write_fz_config(endpoint=True, endpoint_address=f"[{UNDERLAY6_B}]:{PORT_B}")
    lab.start_fz(endpoint=True, config=config)
    assert lab.ping(lab.ns_a, TUNNEL_B), lab.fz_output()
    assert lab.ping(lab.ns_b, TUNNEL_A), lab.fz_output()
    assert lab.wg_endpoint() == f"[{UNDERLAY6_A}]:{PORT_A}"
    for sender, receiver, address in ((lab.ns_a, lab.ns_b, TUNNEL_B), (lab.ns_b, lab.ns_a, TUNNEL_A)):
        sent, received = lab.transfer(sender, receiver, address, 8 << 20)
        assert sent == received, f"to {address}: sent {sent}, received {received}"
    # Neither side has an IPv4 endpoint, and wireguard-go still sees fz-gateway at its IPv6 one.
    assert lab.wg_endpoint() == f"[{UNDERLAY6_A}]:{PORT_A}"
    assert lab.stop_fz() == 0
    counters = fz_counters(lab.fz_output())
    assert counters["tso_read"] > 0 and counters["gso_written"] > 0, counters


def test_tcp_bytes_arrive_intact_with_offloads_turned_off(lab):
    lab.start_wireguard_go(endpoint=True)
    lab.start_fz(endpoint=True, extra=("--no-offload",))
    assert lab.ping(lab.ns_a, TUNNEL_B), lab.fz_output()
    for sender, receiver, address in ((lab.ns_a, lab.ns_b, TUNNEL_B), (lab.ns_b, lab.ns_a, TUNNEL_A)):
        sent, received = lab.transfer(sender, receiver, address, 4 << 20)
        assert sent == received, f"to {address}: sent {sent}, received {received}"
    assert lab.stop_fz() == 0
    counters = fz_counters(lab.fz_output())
    assert "offload=off" in lab.fz_output()
    assert counters["tso_read"] == 0 and counters["gso_written"] == 0, counters


def test_fz_gateway_runs_as_an_unprivileged_user_with_only_cap_net_admin(lab):
    # What systemd/fz-gateway@.service grants: a user without rights of its own, CAP_NET_ADMIN
    # and nothing else (TUN device, rtnetlink, offloads), and a configuration only it can read.
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) missing")
    lab.start_wireguard_go(endpoint=True)
    private = Path(tempfile.mkdtemp(prefix="fzwg-nobody-"))
    try:
        os.chmod(private, 0o755)
        os.chmod(lab.workdir, 0o711)  # the notify socket lives there: traversable, not listable
        config = private / "wg.conf"
        config.write_text(lab.write_fz_config(endpoint=True).read_text())
        os.chown(config, 65534, 65534)
        os.chmod(config, 0o600)
        # systemd hosts make /dev/net/tun world-accessible (udev: MODE 0666); where it is root-only
        # (as on this test machine), a 0666 copy of the node is bound over it in a mount
        # namespace of fz-gateway's own, and the host's node is left alone.
        tun = private / "tun"
        os.mknod(tun, 0o666 | stat.S_IFCHR, os.makedev(10, 200))
        os.chmod(tun, 0o666)
        setpriv = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all,+net_admin",
                   "--ambient-caps=-all,+net_admin", "--bounding-set=-all,+net_admin", "--no-new-privs")
        wrapper = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
                   f'mount --bind "{tun}" /dev/net/tun && exec "$@"', "sh", *setpriv)
        lab.start_fz(endpoint=True, wrapper=wrapper, config=config)
        status = Path(f"/proc/{lab.fz.pid}/status")
        # `ip netns exec`, unshare, sh and setpriv each exec the next: the PID ends up fz-gateway's.
        wait_for(lambda: "fz-gateway" in Path(f"/proc/{lab.fz.pid}/cmdline").read_text(errors="replace"), 5,
                 what="fz-gateway to replace setpriv")
        fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        assert fields["Uid"].split()[0] == "65534", fields["Uid"]
        assert int(fields["CapEff"], 16) == 1 << 12, fields["CapEff"]  # CAP_NET_ADMIN only
        assert lab.ping(lab.ns_a, TUNNEL_B), lab.fz_output()
        sent, received = lab.transfer(lab.ns_b, lab.ns_a, TUNNEL_A, 2 << 20)
        assert sent == received
        assert "offload=tso+gro" in lab.fz_output()
        assert lab.stop_fz() == 0
        assert not lab.link_exists(lab.ns_a, lab.if_a)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def test_restarted_fz_gateway_handshakes_again_and_traffic_resumes(lab):
    lab.start_wireguard_go(endpoint=True)
    lab.start_fz(endpoint=True)
    assert lab.ping(lab.ns_a, TUNNEL_B), lab.fz_output()
    first = lab.wg_latest_handshake()
    assert lab.stop_fz() == 0
    time.sleep(1.1)  # wg shows handshake times in whole seconds
    lab.start_fz(endpoint=True)
    assert lab.ping(lab.ns_a, TUNNEL_B, deadline=15), lab.fz_output()
    assert lab.ping(lab.ns_b, TUNNEL_A), lab.fz_output()
    assert lab.wg_latest_handshake() > first


def test_restarted_fz_gateway_without_endpoint_is_found_by_wireguard_go(lab):
    # fz has no Endpoint: after its restart only wireguard-go can re-establish the session. It does
    # so once its old session gets no answer (KEEPALIVE + REKEY_TIMEOUT, about 15 s).
    lab.start_fz(endpoint=False)
    lab.start_wireguard_go(endpoint=True)
    assert lab.ping(lab.ns_b, TUNNEL_A), lab.fz_output()
    assert lab.stop_fz() == 0
    lab.start_fz(endpoint=False)
    assert lab.ping(lab.ns_b, TUNNEL_A, count=1, deadline=30), lab.fz_output()


def test_fz_gateway_follows_the_peer_to_its_new_port(lab):
    lab.start_fz(endpoint=True)
    lab.start_wireguard_go(endpoint=True)
    assert lab.ping(lab.ns_b, TUNNEL_A), lab.fz_output()
    # wireguard-go re-binds to another port: its old endpoint no longer answers, so fz-gateway can
    # only reply if it learned the new endpoint from the authenticated packets (§2.1 roaming).
    # (Moving wireguard-go's address instead does not work with Debian's wireguard-go: its sticky
    # source address keeps it sending from the deleted address.)
    lab.ns(lab.ns_b, "wg", "set", lab.if_b, "listen-port", str(PORT_B_MOVED))
    assert lab.ping(lab.ns_b, TUNNEL_A, deadline=10), lab.fz_output()
    assert lab.ping(lab.ns_a, TUNNEL_B), lab.fz_output()


def test_wireguard_go_follows_fz_gateway_to_its_new_address(lab):
    lab.start_wireguard_go(endpoint=True)
    lab.start_fz(endpoint=True)
    assert lab.ping(lab.ns_a, TUNNEL_B), lab.fz_output()
    # fz-gateway's host moves (its socket is bound to the wildcard, so it keeps working).
    # (Deleted first: deleting a primary address also deletes the secondaries of its prefix.)
    lab.ns(lab.ns_a, "ip", "addr", "del", f"{UNDERLAY_A}/24", "dev", lab.veth_a)
    lab.ns(lab.ns_a, "ip", "addr", "add", f"{UNDERLAY_A_MOVED}/24", "dev", lab.veth_a)
    assert lab.ping(lab.ns_a, TUNNEL_B, deadline=10), lab.fz_output()
    assert lab.wg_endpoint() == f"{UNDERLAY_A_MOVED}:{PORT_A}"
    assert lab.ping(lab.ns_b, TUNNEL_A), lab.fz_output()


def test_bad_configuration_names_line_and_key_and_exits_non_zero(tmp_path):
    config = tmp_path / "bad.conf"
    config.write_text("[Interface]\nPrivateKey = not-a-key\n")
    out = subprocess.run([gateway_bin(), "--wg-config", str(config), "--interface", "fzbad0"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "line 2" in out.stderr and "PrivateKey" in out.stderr, out.stderr


# ---------------------------------------------------------------------------- handshake flood (§5.3)
#
# A flood of handshake initiations with a valid MAC1 (which needs only the responder's public key)
# and random ephemeral/static/timestamp fields: each passes the cheap check and would cost the
# responder a Curve25519 computation. fz-gateway must go "under load" and answer them with 64-byte
# cookie replies instead, rate-limit sources that do present a valid MAC2, and keep serving its
# legitimate peer, whose handshake then takes one cookie round trip (wireguard-go retries with MAC2
# after REKEY_TIMEOUT, 5 s).

FLOOD_RATE = 4000  # initiations per second
FLOOD_MAX_SECONDS = 30.0  # the flood stops by itself after this long...
FLOOD_MAX_COUNT = 120_000  # ...or this many initiations, whichever comes first
FLOOD_MAC2_BURST = 200  # initiations with a valid MAC2 (from a cookie we got), sent back to back


def labelled_key(label: bytes, public_b64: str) -> bytes:
    """HASH(label ‖ Spub): the MAC1 key ("mac1----") and the cookie key ("cookie--")."""
    return hashlib.blake2s(label + base64.b64decode(public_b64)).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """MAC(key, data) = keyed BLAKE2s-128."""
    return hashlib.blake2s(data, digest_size=16, key=key).digest()


def forged_initiation(mac1_key: bytes, sender: int) -> bytes:
    """A 148-byte initiation: random ephemeral, encrypted static and timestamp; valid MAC1; no MAC2."""
    body = struct.pack("<II", 1, sender) + os.urandom(108)
    return body + mac(mac1_key, body) + bytes(16)


def _rotl32(v: int, c: int) -> int:
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    s = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, *struct.unpack("<8I", key), *struct.unpack("<4I", nonce16)]

    def qr(a, b, c, d):
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = _rotl32(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = _rotl32(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = _rotl32(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = _rotl32(s[b] ^ s[c], 7)

    for _ in range(10):
        qr(0, 4, 8, 12); qr(1, 5, 9, 13); qr(2, 6, 10, 14); qr(3, 7, 11, 15)
        qr(0, 5, 10, 15); qr(1, 6, 11, 12); qr(2, 7, 8, 13); qr(3, 4, 9, 14)
    return struct.pack("<8I", *s[0:4], *s[12:16])


def open_cookie_reply(reply: bytes, cookie_key: bytes, mac1_of_message: bytes) -> bytes | None:
    """The 16-byte cookie of a cookie reply (XChaCha20-Poly1305, AD = the answered MAC1), or None
    when `cryptography` is not installed or the reply does not authenticate."""
    try:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    except ImportError:
        return None
    nonce = reply[8:32]
    try:
        return ChaCha20Poly1305(hchacha20(cookie_key, nonce[:16])).decrypt(bytes(4) + nonce[16:], reply[32:64],
                                                                          mac1_of_message)
    except InvalidTag:
        return None


CLONE_NEWNET = 0x40000000


def udp_socket_in_netns(ns: str, bind: tuple[str, int]) -> socket.socket:
    """A UDP socket created inside network namespace `ns` (setns(2) in a short-lived thread, so no
    other thread changes namespace; the socket stays in `ns` wherever it is used)."""
    result: dict = {}

    def make():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({ns})")
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind(bind)
            sock.setblocking(False)
            result["sock"] = sock
        except Exception as e:  # reported to the caller
            result["error"] = e

    # The thread ends right after: its namespace change dies with it.
    t = threading.Thread(target=make)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["sock"]


class HandshakeFlood(threading.Thread):
    """Sends forged initiations at FLOOD_RATE from `sock` to fz-gateway, bounded by FLOOD_MAX_SECONDS
    and FLOOD_MAX_COUNT (or `stop()`), and counts what comes back. Once it holds a cookie (and
    `cryptography` is available) it sends one burst of FLOOD_MAC2_BURST initiations with a valid
    MAC2, which fz-gateway's per-source rate limiter must cut down to its burst of 5 (+20/s)."""

    def __init__(self, sock: socket.socket, target: tuple[str, int], responder_public: str):
        super().__init__(daemon=True)
        self.sock = sock
        self.target = target
        self.mac1_key = labelled_key(b"mac1----", responder_public)
        self.cookie_key = labelled_key(b"cookie--", responder_public)
        # A pool of distinct initiations, sender index -> (message, its MAC1).
        self.pool = [forged_initiation(self.mac1_key, 0x10000 + i) for i in range(1024)]
        self.mac1_by_sender = {0x10000 + i: m[116:132] for i, m in enumerate(self.pool)}
        self.sent = 0
        self.cookie_replies = 0
        self.other_replies = 0
        self.first_cookie_at: float | None = None
        self.cookie: bytes | None = None
        self.mac2_sent = 0
        self.started_at = 0.0
        self.ended_at = 0.0
        self.error: Exception | None = None
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    @property
    def running(self) -> bool:
        return self.is_alive()

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            if len(data) == 64 and data[0] == 3 and data[1:4] == bytes(3):
                self.cookie_replies += 1
                if self.first_cookie_at is None:
                    self.first_cookie_at = time.monotonic()
                if self.cookie is None:
                    receiver = struct.unpack_from("<I", data, 4)[0]
                    ad = self.mac1_by_sender.get(receiver)
                    if ad is not None:
                        self.cookie = open_cookie_reply(data, self.cookie_key, ad)
            else:
                self.other_replies += 1

    def _send(self, message: bytes) -> None:
        try:
            self.sock.sendto(message, self.target)
            self.sent += 1
        except (BlockingIOError, InterruptedError):
            pass

    def run(self) -> None:
        try:
            self.started_at = time.monotonic()
            deadline = self.started_at + FLOOD_MAX_SECONDS
            tick = 0.005
            per_tick = max(1, int(FLOOD_RATE * tick))
            next_tick = self.started_at
            i = 0
            while not self._halt.is_set() and self.sent < FLOOD_MAX_COUNT and time.monotonic() < deadline:
                for _ in range(per_tick):
                    self._send(self.pool[i % len(self.pool)])
                    i += 1
                self._drain()
                if self.cookie is not None and self.mac2_sent == 0 and time.monotonic() - self.started_at > 1.0:
                    for k in range(FLOOD_MAC2_BURST):
                        body = bytearray(self.pool[(i + k) % len(self.pool)][:132])
                        self._send(bytes(body) + mac(self.cookie, bytes(body)))
                        self.mac2_sent += 1
                next_tick += tick
                pause = next_tick - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                else:
                    next_tick = time.monotonic()
            time.sleep(0.2)
            self._drain()
        except Exception as e:
            self.error = e
        finally:
            self.ended_at = time.monotonic()

    def summary(self) -> str:
        seconds = max(1e-9, (self.ended_at or time.monotonic()) - self.started_at)
        return (f"sent {self.sent} initiations in {seconds:.1f}s ({self.sent / seconds:.0f}/s), "
                f"{self.mac2_sent} of them with a valid MAC2; received {self.cookie_replies} cookie replies, "
                f"{self.other_replies} other datagrams")


def fz_counters(log: str) -> dict[str, int]:
    """The counters of fz-gateway's final "stopped" log line (name=value pairs)."""
    stopped = [line for line in log.splitlines() if "stopped" in line and "counters" in line]
    assert stopped, f"no counters in fz-gateway's log:\n{log[-3000:]}"
    return {k: int(v) for k, v in re.findall(r"\b([a-z_0-9]+)=(\d+)\b", stopped[-1])}


def test_hchacha20_matches_the_xchacha_draft_vector():
    # draft-irtf-cfrg-xchacha-03 §2.2.1: the helper the flood uses to open cookie replies.
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    assert hchacha20(key, nonce).hex() == "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"


def test_handshake_flood_gets_cookie_replies_and_the_legitimate_peer_still_connects(lab):
    lab.start_wireguard_go(endpoint=True)
    lab.start_fz(endpoint=True)
    assert lab.ping(lab.ns_b, TUNNEL_A), lab.fz_output()

    # The flood's source: an extra 10.x address next to wireguard-go's, in its namespace.
    lab.ns(lab.ns_b, "ip", "addr", "add", f"{UNDERLAY_FLOOD}/24", "dev", lab.veth_b)
    sock = udp_socket_in_netns(lab.ns_b, (UNDERLAY_FLOOD, 0))
    flood = HandshakeFlood(sock, (UNDERLAY_A, PORT_A), lab.pub_a)
    try:
        flood.start()
        wait_for(lambda: flood.cookie_replies > 0 or not flood.running, 10, what="the first cookie reply")
        assert flood.cookie_replies > 0, f"no cookie reply: {flood.summary()}\n{lab.fz_output()[-3000:]}"

        # During the flood, wireguard-go forgets its session (peer removed and added again) and
        # must handshake anew: its first initiation gets a cookie reply, its retry carries MAC2.
        before = flood.sent
        lab.ns(lab.ns_b, "wg", "set", lab.if_b, "peer", lab.pub_a, "remove")
        lab.ns(lab.ns_b, "wg", "set", lab.if_b, "peer", lab.pub_a, "preshared-key", str(lab.workdir / "psk"),
               "allowed-ips", f"{TUNNEL_A}/32", "endpoint", f"{UNDERLAY_A}:{PORT_A}")
        assert lab.wg_latest_handshake() == 0
        started = time.monotonic()
        assert lab.ping(lab.ns_b, TUNNEL_A, count=1, deadline=25), f"{flood.summary()}\n{lab.fz_output()[-3000:]}"
        handshake_seconds = time.monotonic() - started
        assert lab.wg_latest_handshake() > 0
        assert flood.running and flood.sent > before, "the handshake must complete while the flood goes on"
    finally:
        flood.stop()
        flood.join(timeout=FLOOD_MAX_SECONDS + 5)
        sock.close()
    assert not flood.is_alive()
    assert flood.error is None, flood.error
    print(f"\nflood: {flood.summary()}; wireguard-go's handshake took {handshake_seconds:.1f}s during it")

    assert flood.sent >= 1000
    assert flood.cookie_replies > 0
    assert lab.fz is not None and lab.fz.poll() is None, f"fz-gateway died:\n{lab.fz_output()[-3000:]}"
    assert lab.ping(lab.ns_a, TUNNEL_B), lab.fz_output()[-3000:]
    assert lab.ping(lab.ns_b, TUNNEL_A), lab.fz_output()[-3000:]
    log = lab.fz_output()
    assert "handshake load: under load" in log
    for line in log.splitlines():
        if "handshake load" in line:
            print(line)
    assert lab.stop_fz() == 0
    counters = fz_counters(lab.fz_output())
    print(f"fz-gateway: {', '.join(f'{k}={counters[k]}' for k in ('handshake_messages', 'cookie_replies_sent', 'rate_limited', 'bad_mac1', 'handshake_auth_failed', 'under_load_episodes', 'under_load_ms') if k in counters)}")
    assert counters["cookie_replies_sent"] >= flood.cookie_replies
    assert counters["under_load_episodes"] >= 1
    # Only the messages before the load was noticed (or that got through the rate limit) cost a
    # Curve25519 computation: a tiny fraction of the flood.
    assert counters["handshake_auth_failed"] < flood.sent / 20, counters
    if flood.mac2_sent:
        # MAC2-valid initiations from one source: at most the burst of 5 plus 20/s get through.
        assert counters["rate_limited"] >= flood.mac2_sent - 5 - 20 * 2, counters
