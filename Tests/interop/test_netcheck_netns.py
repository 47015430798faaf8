"""`fz-client netcheck` in a small internet of network namespaces: NAT behaviours and relay RTTs.

    swift build --product fz-client --product fz-relay     # or set FZ_CLIENT_BIN / FZ_RELAY_BIN
    sudo python3 -m pytest -q Tests/interop/test_netcheck_netns.py

Needs root, iproute2 and iptables (scripts/deps.sh installs them). The lab (docs' "lab" in
shared/reference/design.md), per test, names unique to the run:

    host 10.77.0.2 ── 10.77.0.1 nat 198.18.0.1 ── 198.18.0.254 core 198.18.1.1 ── 198.18.1.2 relay1 (fz-relay)
                                                                  198.18.2.1 ── 198.18.2.2 relay2 (fz-relay)
    without NAT: host 198.18.3.2 ── 198.18.3.1 core

`nat` masquerades the host (MASQUERADE keeps the source port: endpoint-independent mapping;
`--random-fully` picks a port per destination: endpoint-dependent) and drops unsolicited inbound
traffic, as a home router does. `core` delays what comes from the client side towards each relay
by routing it through a TUN device that `tundelay.py` holds for D ms (this kernel has no netem):
5 ms in front of one relay, 40 ms in front of the other; replies are not delayed, so the RTT is
D plus the lab's own fraction of a millisecond.

Every process (relays, delay programs) is stopped by its PID and every namespace (with its veths
and TUN devices) deleted at the end of the test, pass or fail; teardown checks none is left.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import stunproto
from conftest import Relay, kill_process, wait_for
from test_wireguard import run, udp_socket_in_netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

HERE = Path(__file__).resolve().parent
RELAY_PORT = 3478
RELAY1 = "198.18.1.2"
RELAY2 = "198.18.2.2"
NAT_WAN = "198.18.0.1"
HOST_LAN = "10.77.0.2"
HOST_PUBLIC = "198.18.3.2"
DELAY_TABLE = "100"

_counter = itertools.count()


class NetcheckLab:
    """The namespaces above, built in `__init__`, torn down by `close()` (also after a failed build)."""

    def __init__(self, relay_bin: str, workdir: Path, nat: str, delays: tuple[int, int]):
        assert nat in ("masquerade", "random-fully", "none")
        n = next(_counter)
        tag = f"{os.getpid() % 100000}{n}"
        self.prefix = f"fznc-{tag}-"
        self.workdir = workdir
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.relays: list[Relay] = []
        self.host, self.core = self._ns("host"), self._ns("core")
        self.r1, self.r2 = self._ns("r1"), self._ns("r2")
        self.nat = self._ns("nat") if nat != "none" else None
        short = f"nc{tag}"[-9:]  # interface names: at most 15 bytes

        core = self.core
        for ns in (core, self.nat):
            if ns:
                self.sysctl(ns, "net.ipv4.ip_forward=1")
        # Packets come back out of the TUN devices with their original sources: no reverse-path check.
        for key in ("all", "default"):
            self.sysctl(core, f"net.ipv4.conf.{key}.rp_filter=0")

        if self.nat:
            self.link(self.host, f"{short}h", f"{HOST_LAN}/24", self.nat, f"{short}l", "10.77.0.1/24")
            run("ip", "-n", self.host, "route", "add", "default", "via", "10.77.0.1")
            self.link(self.nat, f"{short}w", f"{NAT_WAN}/24", core, f"{short}u", "198.18.0.254/24")
            run("ip", "-n", self.nat, "route", "add", "default", "via", "198.18.0.254")
            masquerade = ["-j", "MASQUERADE"] + (["--random-fully"] if nat == "random-fully" else [])
            self.iptables(self.nat, "-t", "nat", "-A", "POSTROUTING", "-o", f"{short}w", *masquerade)
            self.iptables(self.nat, "-A", "INPUT", "-i", f"{short}w", "-m", "conntrack", "--ctstate", "NEW",
                          "-j", "DROP")
            self.client_address = NAT_WAN
        else:
            self.link(self.host, f"{short}h", f"{HOST_PUBLIC}/24", core, f"{short}u", "198.18.3.1/24")
            run("ip", "-n", self.host, "route", "add", "default", "via", "198.18.3.1")
            self.client_address = HOST_PUBLIC
        self.link(core, f"{short}a", "198.18.1.1/24", self.r1, f"{short}r", f"{RELAY1}/24")
        self.link(core, f"{short}b", "198.18.2.1/24", self.r2, f"{short}s", f"{RELAY2}/24")
        run("ip", "-n", self.r1, "route", "add", "default", "via", "198.18.1.1")
        run("ip", "-n", self.r2, "route", "add", "default", "via", "198.18.2.1")

        # What arrives from the client side goes to table 100, which sends each relay's subnet into
        # its delay device; what the delay programs write back arrives on the TUN, not the uplink,
        # so the main table forwards it to the relay.
        for tun, subnet, delay in ((f"{short}d1", "198.18.1.0/24", delays[0]),
                                   (f"{short}d2", "198.18.2.0/24", delays[1])):
            self.start_delay(tun, delay)
            run("ip", "-n", core, "link", "set", tun, "up")
            self.sysctl(core, f"net.ipv4.conf.{tun}.rp_filter=0")
            run("ip", "-n", core, "route", "add", subnet, "dev", tun, "table", DELAY_TABLE)
        run("ip", "-n", core, "rule", "add", "iif", f"{short}u", "lookup", DELAY_TABLE)

        for ns, address in ((self.r1, RELAY1), (self.r2, RELAY2)):
            relay = NamespacedRelay(ns, self.core, relay_bin, workdir,
                                    args=("--allow-peer", "198.18.0.0/15", "--allow-peer", "10.0.0.0/8"),
                                    listen=(address,), port=RELAY_PORT, name=f"relay-{ns}")
            self.relays.append(relay)
            relay.start()

    # ------------------------------------------------------------------ building blocks

    def _ns(self, role: str) -> str:
        name = self.prefix + role
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    @staticmethod
    def sysctl(ns: str, setting: str) -> None:
        run("ip", "netns", "exec", ns, "sysctl", "-qw", setting)

    @staticmethod
    def iptables(ns: str, *args: str) -> None:
        run("ip", "netns", "exec", ns, "iptables", *args)

    @staticmethod
    def link(ns_a: str, if_a: str, addr_a: str, ns_b: str, if_b: str, addr_b: str) -> None:
        run("ip", "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
        for ns, ifname, address in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
            run("ip", "-n", ns, "addr", "add", address, "dev", ifname)
            run("ip", "-n", ns, "link", "set", ifname, "up")

    def start_delay(self, tun: str, delay_ms: int) -> None:
        log = open(self.workdir / f"tundelay-{tun}.log", "wb")
        proc = subprocess.Popen(["ip", "netns", "exec", self.core, sys.executable, str(HERE / "tundelay.py"), tun,
                                 str(delay_ms)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)

        def exists():
            if proc.poll() is not None:
                raise AssertionError(f"tundelay {tun} exited: {(self.workdir / f'tundelay-{tun}.log').read_text()}")
            return run("ip", "-n", self.core, "link", "show", tun, check=False).returncode == 0

        wait_for(exists, 10, what=f"TUN device {tun}")

    # ------------------------------------------------------------------ running the client

    def netcheck(self, client_bin: str, *relays: str, json_output: bool = True) -> subprocess.CompletedProcess:
        argv = ["ip", "netns", "exec", self.host, client_bin, "netcheck"]
        for r in relays or (f"{RELAY1}:{RELAY_PORT}", f"{RELAY2}:{RELAY_PORT}"):
            argv += ["--relay", r]
        if json_output:
            argv.append("--json")
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}\n{self.describe()}"
        return out

    def report(self, client_bin: str) -> dict:
        return json.loads(self.netcheck(client_bin).stdout)

    def describe(self) -> str:
        return "\n".join(f"--- {r.name}\n{r.log()[-2000:]}" for r in self.relays)

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        for relay in self.relays:
            try:
                relay.stop()
            except Exception:
                pass
        for proc in reversed(self.procs):
            try:
                kill_process(proc)
            except Exception:
                pass
        for ns in reversed(self.namespaces):
            run("ip", "netns", "del", ns, check=False)

    def leftovers(self) -> list[str]:
        listed = run("ip", "netns", "list", check=False).stdout.split()
        return [name for name in listed if name.startswith(self.prefix)]


class NamespacedRelay(Relay):
    """conftest's Relay, run inside `ns` with `ip netns exec` (which execs, so the PID is fz-relay's),
    and asked for readiness from a socket in `probe_ns`, which can reach it."""

    def __init__(self, ns: str, probe_ns: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ns = ns
        self.probe_ns = probe_ns

    def _command(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *super()._command()]

    def wait_ready(self, timeout: float = 15.0) -> None:
        sock = udp_socket_in_netns(self.probe_ns, ("0.0.0.0", 0))
        try:
            def answered():
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
                return stunproto.binding(self.host, self.port, timeout=0.2, sock=sock) is not None

            wait_for(answered, timeout, interval=0.01, what=f"{self.name} to answer a Binding")
        finally:
            sock.close()


@pytest.fixture
def make_lab(relay_bin, tmp_path):
    """make_lab(nat, delays=(5, 40)) -> NetcheckLab; every lab is torn down at the end, pass or fail."""
    for tool in ("ip", "iptables"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            pytest.skip(f"{tool} missing: run scripts/deps.sh test")
    labs: list[NetcheckLab] = []

    def make(nat: str, delays: tuple[int, int] = (5, 40)) -> NetcheckLab:
        lab = NetcheckLab.__new__(NetcheckLab)
        labs.append(lab)  # registered before building, so a half-built lab is torn down too
        lab.__init__(relay_bin, tmp_path, nat, delays)
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            lab.close()
        left = [name for lab in labs if hasattr(lab, "prefix") for name in lab.leftovers()]
        assert not left, f"namespaces left behind: {left}"


def by_address(report: dict) -> dict[str, dict]:
    return {r["address"]: r for r in report["relays"]}


R1 = f"{RELAY1}:{RELAY_PORT}"
R2 = f"{RELAY2}:{RELAY_PORT}"


def assert_rtts(report: dict, near: str, far: str) -> None:
    """`near` sits behind 5 ms, `far` behind 40 ms of one-way delay."""
    relays = by_address(report)
    assert 5.0 <= relays[near]["rtt_ms"] < 25.0, report
    assert 40.0 <= relays[far]["rtt_ms"] < 70.0, report
    assert report["preferred_relay"] == near, report


# ---------------------------------------------------------------------------- tests


def test_masquerade_is_endpoint_independent_and_the_5ms_relay_is_preferred(make_lab, client_bin):
    lab = make_lab("masquerade")
    report = lab.report(client_bin)
    mapped = {r["mapped"] for r in report["relays"]}
    assert len(mapped) == 1 and mapped.pop().startswith(f"{NAT_WAN}:"), report
    assert report["mapping"] == "endpoint-independent", report
    assert_rtts(report, near=R1, far=R2)


def test_masquerade_random_fully_is_endpoint_dependent(make_lab, client_bin):
    lab = make_lab("random-fully")
    report = lab.report(client_bin)
    mapped = [r["mapped"] for r in report["relays"]]
    assert all(m.startswith(f"{NAT_WAN}:") for m in mapped) and mapped[0] != mapped[1], report
    assert report["mapping"] == "endpoint-dependent", report
    assert_rtts(report, near=R1, far=R2)


def test_host_on_the_public_segment_has_no_nat(make_lab, client_bin):
    lab = make_lab("none")
    report = lab.report(client_bin)
    mapped = {r["mapped"] for r in report["relays"]}
    assert len(mapped) == 1 and mapped.pop().startswith(f"{HOST_PUBLIC}:"), report
    assert report["mapping"] == "none", report
    assert_rtts(report, near=R1, far=R2)


def test_preference_follows_the_delay_not_the_order_of_relays(make_lab, client_bin):
    lab = make_lab("masquerade", delays=(40, 5))
    report = lab.report(client_bin)
    assert [r["address"] for r in report["relays"]] == [R1, R2]
    assert_rtts(report, near=R2, far=R1)


def test_text_output_behind_masquerade(make_lab, client_bin):
    lab = make_lab("masquerade")
    lines = lab.netcheck(client_bin, json_output=False).stdout.splitlines()
    assert lines[0].startswith(f"relay {R1}: rtt ") and f"mapped {NAT_WAN}:" in lines[0], lines
    assert lines[1].startswith(f"relay {R2}: rtt ") and f"mapped {NAT_WAN}:" in lines[1], lines
    assert lines[2:] == ["mapping: endpoint-independent", f"preferred relay: {R1}"], lines


def test_a_relay_behind_a_dead_address_is_null_and_the_other_preferred(make_lab, client_bin):
    lab = make_lab("masquerade")
    out = lab.netcheck(client_bin, "198.18.1.99:3478", R2)
    report = json.loads(out.stdout)
    assert by_address(report)["198.18.1.99:3478"] == {"address": "198.18.1.99:3478", "rtt_ms": None, "mapped": None}
    assert report["preferred_relay"] == R2
    # One relay answered behind a NAT: nothing to compare the mapping with.
    assert report["mapping"] == "unknown", report
