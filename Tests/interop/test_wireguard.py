"""fz-gateway's WireGuard data plane against wireguard-go (Debian's), in two network namespaces.

    swift build --product fz-gateway          # or set FZ_GATEWAY_BIN
    sudo python3 -m pytest -q Tests/interop/test_wireguard.py

Needs root (namespaces, TUN), `wireguard-go`, `wireguard-tools`, `iperf3` and `ping` (installed with
apt-get --no-install-recommends when missing; the tests skip when that is impossible).

Per test: namespaces `fzwg-a-<pid>-<n>` (fz-gateway) and `fzwg-b-<pid>-<n>` (wireguard-go) joined by a
veth pair on 10.231.0.0/24; tunnel addresses 10.232.0.1 (fz) and 10.232.0.2 (wireguard-go). Only
10.x addresses are used. Every process is stopped by its PID and both namespaces (with the veth and
TUN interfaces inside them) are deleted at the end of the test, pass or fail.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, kill_process, wait_for

UNDERLAY_A = "10.231.0.1"
UNDERLAY_B = "10.231.0.2"
UNDERLAY_A_MOVED = "10.231.0.4"
TUNNEL_A = "10.232.0.1"
TUNNEL_B = "10.232.0.2"
PORT_A = 51820
PORT_B = 51821
PORT_B_MOVED = 51822
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

    def start_wireguard_go(self, endpoint: bool) -> None:
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
            args += ["endpoint", f"{UNDERLAY_A}:{PORT_A}"]
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

    def write_fz_config(self, endpoint: bool, keepalive: int | None = None) -> Path:
        lines = [
            "# fz-gateway static-peer test configuration",
            "[Interface]",
            f"PrivateKey = {self.priv_a}",
            f"ListenPort = {PORT_A}",
            f"Address = {TUNNEL_A}/24",
            "MTU = 1420",
            "",
            "[Peer]  # wireguard-go",
            f"PublicKey = {self.pub_b}",
            f"PresharedKey = {self.psk}",
            f"AllowedIPs = {TUNNEL_B}/32",
        ]
        if endpoint:
            lines.append(f"Endpoint = {UNDERLAY_B}:{PORT_B}")
        if keepalive:
            lines.append(f"PersistentKeepalive = {keepalive}")
        path = self.workdir / "fz.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_fz(self, endpoint: bool, keepalive: int | None = None) -> subprocess.Popen:
        config = self.write_fz_config(endpoint, keepalive)
        if self.notify:
            self.notify.close()
        self.notify = NotifyListener(self.workdir)
        self.fz_log = self.workdir / f"fz-{next(_counter)}.log"
        log = open(self.fz_log, "w")
        env = {**os.environ, "NOTIFY_SOCKET": self.notify.path}
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_a, gateway_bin(), "--wg-config", str(config), "--interface", self.if_a,
             "--log-level", "debug"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.procs.append(proc)
        self.fz = proc
        wait_for(lambda: self.notify.saw("READY=1") or proc.poll() is not None, 15, what="fz-gateway READY=1")
        assert proc.poll() is None, f"fz-gateway exited {proc.returncode}:\n{self.fz_output()}"
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
                return out.returncode == 0 or "Connection refused" not in out.stdout

            wait_for(attempt, 10, interval=0.2, what="iperf3 server")
            assert out is not None and out.returncode == 0, f"iperf3 failed: {out.stdout[-2000:]} {out.stderr}"
            result = json.loads(out.stdout)
            return result["end"]["sum_received"]["bits_per_second"] / 1e6
        finally:
            kill_process(server)

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
