"""`fz-client netcheck` on loopback against fz-relay and coturn's turnserver.

    swift build --product fz-client --product fz-relay     # or set FZ_CLIENT_BIN / FZ_RELAY_BIN
    python3 -m pytest -q Tests/interop/test_netcheck.py

On loopback nothing translates, so every relay reports 127.0.0.1 (or ::1) with the client's own
port and the mapping is `none`. The namespace lab (test_netcheck_netns.py) covers NATs and RTTs.
Every relay is stopped by its PID at the end of the test.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

import stunproto
from conftest import free_port, kill_process, wait_for

# The bound for an unreachable relay; the client's own budget is 1.5 s.
UNREACHABLE_BOUND = 2.0


def netcheck(client_bin: str, *relays: str, json_output: bool = False, extra=(), timeout: float = 10):
    argv = [client_bin, "netcheck", *(a for r in relays for a in ("--relay", r)), *extra]
    if json_output:
        argv.append("--json")
    started = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    out.elapsed = time.monotonic() - started
    return out


def netcheck_json(client_bin: str, *relays: str):
    out = netcheck(client_bin, *relays, json_output=True)
    assert out.returncode == 0, out.stderr
    # Exactly one object on stdout: json.loads rejects anything after it.
    return json.loads(out.stdout), out


class Coturn:
    """coturn's turnserver on 127.0.0.1, UDP only; Binding needs no credentials."""

    def __init__(self, tmp_path):
        self.host = "127.0.0.1"
        self.port = free_port()
        self.log_path = tmp_path / f"coturn-{self.port}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["turnserver", "-n", "--listening-ip", self.host, "-L", self.host, "-p", str(self.port),
             "--relay-ip", self.host, "--min-port", "40000", "--max-port", "59999", "--no-tcp", "--no-tls",
             "--no-dtls", "--no-cli", "--log-file", "stdout", "--simple-log"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: self.proc.poll() is not None
                     or stunproto.binding(self.host, self.port, timeout=0.2) is not None,
                     20, 0.05, "turnserver to answer a Binding")
            assert self.proc.poll() is None, self.log_path.read_text(errors="replace")
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self):
        kill_process(self.proc)
        self.log.close()


@pytest.fixture
def coturn(tmp_path):
    server = Coturn(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def addr(relay) -> str:
    host, port = relay.address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def silent_port() -> int:
    """A loopback UDP port nobody listens on (free on both families when chosen)."""
    return free_port()


# ---------------------------------------------------------------------------- text and JSON


def test_text_output_against_fz_relay_and_coturn(client_bin, start_relay, coturn):
    relay = start_relay()
    out = netcheck(client_bin, addr(relay), coturn.address)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 4, out.stdout
    for line, relay_address in zip(lines, (addr(relay), coturn.address)):
        assert line.startswith(f"relay {relay_address}: rtt "), out.stdout
        assert " ms, mapped 127.0.0.1:" in line and "(5/" in line, out.stdout
    # One socket: both relays saw the same mapped address.
    assert lines[0].split("mapped ")[1].split()[0] == lines[1].split("mapped ")[1].split()[0], out.stdout
    assert lines[2] == "mapping: none", out.stdout
    assert lines[3].startswith("preferred relay: ") and lines[3].split(": ")[1] in (addr(relay), coturn.address)


def test_json_output_against_fz_relay_and_coturn(client_bin, start_relay, coturn):
    relay = start_relay()
    report, _ = netcheck_json(client_bin, addr(relay), coturn.address)
    assert set(report) == {"relays", "mapping", "preferred_relay"}, report
    assert [r["address"] for r in report["relays"]] == [addr(relay), coturn.address]
    for r in report["relays"]:
        assert set(r) == {"address", "rtt_ms", "mapped"}, r
        assert isinstance(r["rtt_ms"], (int, float)) and 0 < r["rtt_ms"] < 100, r
        assert r["mapped"].startswith("127.0.0.1:"), r
    mapped = {r["mapped"] for r in report["relays"]}
    assert len(mapped) == 1, report
    assert report["mapping"] == "none"
    fastest = min(report["relays"], key=lambda r: r["rtt_ms"])
    assert report["preferred_relay"] == fastest["address"]


def test_ipv6_relay_reports_the_ipv6_mapped_address(client_bin, start_relay):
    relay = start_relay(listen=("::1",))
    report, _ = netcheck_json(client_bin, addr(relay))
    (r,) = report["relays"]
    assert r["address"] == f"[::1]:{relay.port}"
    assert r["mapped"].startswith("[::1]:") and r["rtt_ms"] is not None, report
    assert report["mapping"] == "none" and report["preferred_relay"] == r["address"]


def test_ipv4_and_ipv6_relays_in_one_run(client_bin, start_relay):
    relay = start_relay(listen=("127.0.0.1", "::1"))
    v4, v6 = f"127.0.0.1:{relay.port}", f"[::1]:{relay.port}"
    report, _ = netcheck_json(client_bin, v4, v6)
    assert [r["address"] for r in report["relays"]] == [v4, v6]
    assert report["relays"][0]["mapped"].startswith("127.0.0.1:")
    assert report["relays"][1]["mapped"].startswith("[::1]:")
    assert report["mapping"] == "none"


# ---------------------------------------------------------------------------- unreachable relays


def test_unreachable_relay_is_null_within_two_seconds(client_bin):
    port = silent_port()
    report, out = netcheck_json(client_bin, f"127.0.0.1:{port}")
    assert out.elapsed < UNREACHABLE_BOUND, f"took {out.elapsed:.2f}s"
    assert report == {"relays": [{"address": f"127.0.0.1:{port}", "rtt_ms": None, "mapped": None}],
                      "mapping": "unknown", "preferred_relay": None}


def test_unreachable_relay_beside_a_working_one_does_not_win_or_hang(client_bin, start_relay, coturn):
    relay = start_relay()
    silent = f"127.0.0.1:{silent_port()}"
    report, out = netcheck_json(client_bin, silent, addr(relay), coturn.address)
    assert out.elapsed < UNREACHABLE_BOUND, f"took {out.elapsed:.2f}s"
    dead, alive, other = report["relays"]
    assert dead == {"address": silent, "rtt_ms": None, "mapped": None}
    assert alive["rtt_ms"] is not None and other["rtt_ms"] is not None
    assert report["preferred_relay"] in (addr(relay), coturn.address)
    assert report["mapping"] == "none"


def test_unreachable_relay_in_text_output(client_bin):
    port = silent_port()
    out = netcheck(client_bin, f"127.0.0.1:{port}")
    assert out.returncode == 0, out.stderr
    assert out.elapsed < UNREACHABLE_BOUND
    lines = out.stdout.splitlines()
    assert len(lines) == 3, out.stdout
    # One request per 250 ms for 1.5 s: about 6, none answered.
    assert re.fullmatch(rf"relay 127\.0\.0\.1:{port}: unreachable \(0/[4-6] answered\)", lines[0]), out.stdout
    assert lines[1:] == ["mapping: unknown", "preferred relay: none"], out.stdout


def test_stopped_relay_reads_as_unreachable(client_bin, start_relay):
    relay = start_relay()
    address = addr(relay)
    relay.stop()
    report, out = netcheck_json(client_bin, address)
    assert out.elapsed < UNREACHABLE_BOUND
    assert report["relays"][0]["rtt_ms"] is None


# ---------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("bad", ["nonsense", "127.0.0.1", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:0",
                                 "::1:3478", "[::1]", "256.1.1.1:3478", "relay.example:3478", ""])
def test_malformed_relay_exits_2_naming_the_flag(client_bin, bad):
    out = netcheck(client_bin, "127.0.0.1:3478", bad)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "--relay" in out.stderr and out.stdout == "", out.stderr


def test_no_relay_exits_2_naming_the_flag(client_bin):
    out = netcheck(client_bin)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "--relay" in out.stderr


def test_unknown_flag_exits_2_and_help_exits_0(client_bin):
    out = netcheck(client_bin, "127.0.0.1:3478", extra=("--bogus",))
    assert out.returncode == 2, out.stderr
    helped = subprocess.run([client_bin, "netcheck", "--help"], capture_output=True, text=True, timeout=10)
    assert helped.returncode == 0 and "--relay" in helped.stdout and "--json" in helped.stdout
