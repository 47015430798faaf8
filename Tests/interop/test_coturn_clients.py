"""fz-relay against coturn's own clients: turnutils_stunclient and turnutils_uclient."""

from __future__ import annotations

import re
import subprocess

import pytest

import stunproto
from conftest import UCLIENT_LOAD, assert_clean_echo, run_uclient

SECRET = "interop-rest-secret"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_stunclient_prints_the_mapped_address(start_relay, host):
    relay = start_relay(listen=("127.0.0.1", "::1"))
    argv = ["turnutils_stunclient", "-p", str(relay.port), host]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    found = re.findall(r"UDP reflexive addr: (\S+):(\d+)", text)
    assert found, f"no reflexive address in:\n{text}"
    ip, port = found[-1]
    assert ip == host, text
    assert 0 < int(port) < 65536, text
    family = "IPv6" if ":" in host else "IPv4"
    assert f"{family}. UDP reflexive addr" in text, text


def _credentials(kind: str) -> list[str]:
    if kind == "static user":
        return ["-u", "alice", "-w", "alice-pass"]
    return ["-W", SECRET, "-u", "uclient"]


@pytest.mark.parametrize("mode", ["channels", "send indications"])
@pytest.mark.parametrize("auth", ["static user", "REST secret"])
def test_uclient_echoes_every_message_through_the_relay(start_relay, echo_peer, auth, mode):
    relay = start_relay("--user", "alice:alice-pass", "--static-auth-secret", SECRET,
                        "--allow-loopback-peers", metrics=True)
    flags = _credentials(auth) + list(UCLIENT_LOAD) + (["-s"] if mode == "send indications" else [])
    result = run_uclient(relay, echo_peer.address, *flags)
    assert_clean_echo(result)
    # The echoes really went through the relay: the peer's 800 answers came in on relayed
    # sockets (metrics are published about once a second).
    relay.wait_metric("fz_relay_peer_packets_in_total", lambda v: v >= 800)
    counter = ("fz_relay_channel_data_in_total" if mode == "channels"
               else "fz_relay_send_indications_in_total")
    relay.wait_metric(counter, lambda v: v >= 800)


@pytest.mark.parametrize("mode", ["channels", "send indications"])
@pytest.mark.parametrize("auth", ["static user", "REST secret"])
def test_uclient_over_tcp_echoes_every_message_through_the_relay(start_relay, echo_peer, auth, mode):
    """TURN over TCP (RFC 8656 §3.1, `turnutils_uclient -t`): the client's leg is one TCP stream
    (STUN and ChannelData framed on it, ChannelData padded to 4), the peer's leg UDP."""
    relay = start_relay("--user", "alice:alice-pass", "--static-auth-secret", SECRET,
                        "--allow-loopback-peers", metrics=True)
    flags = _credentials(auth) + ["-t"] + list(UCLIENT_LOAD) + (["-s"] if mode == "send indications" else [])
    result = run_uclient(relay, echo_peer.address, *flags)
    assert_clean_echo(result)
    relay.wait_metric("fz_relay_peer_packets_in_total", lambda v: v >= 800)
    counter = ("fz_relay_channel_data_in_total" if mode == "channels"
               else "fz_relay_send_indications_in_total")
    relay.wait_metric(counter, lambda v: v >= 800)


def test_no_tcp_refuses_turn_over_tcp(start_relay, echo_peer):
    relay = start_relay("--user", "alice:alice-pass", "--allow-loopback-peers", "--no-tcp")
    result = run_uclient(relay, echo_peer.address, "-u", "alice", "-w", "alice-pass", "-t", "-m", "1", "-n", "5", "-c",
                         timeout=30)
    assert result.totals != (5, 5), result.describe()


@pytest.mark.parametrize("mode", ["channels", "send indications"])
def test_relaying_to_loopback_is_refused_with_403_by_default(start_relay, counting_peer, mode):
    relay = start_relay("--user", "alice:alice-pass", metrics=True)
    peer = counting_peer(echo=True)
    flags = ["-u", "alice", "-w", "alice-pass", "-m", "1", "-n", "20", "-l", "120", "-c"]
    if mode == "send indications":
        flags.append("-s")
    result = run_uclient(relay, peer.address, *flags, timeout=30)
    what = "channel bind" if mode == "channels" else "create permission"
    assert re.search(rf"{what}.*error 403", result.output), result.describe()
    assert result.returncode != 0, result.describe()
    assert not re.search(r"tot_recv_msgs=[1-9]", result.output), result.describe()
    relay.wait_metric("fz_relay_peer_denied_total", lambda v: v > 0)
    m = relay.metrics()
    assert m["fz_relay_relayed_bytes_to_peers_total"] == 0, m
    assert m["fz_relay_permissions_created_total"] == 0, m
    assert peer.received == [], peer.received[:5]


def test_send_indication_to_a_denied_peer_is_dropped(start_relay, counting_peer):
    """By hand, after the 403: a Send indication without a permission reaches nobody."""
    relay = start_relay("--user", "alice:alice-pass", metrics=True)
    peer = counting_peer(echo=True)
    client = stunproto.TurnClient(relay.address, "alice", "alice-pass")
    try:
        assert client.allocate().cls == stunproto.SUCCESS
        refused = client.create_permission(peer.address)
        assert (refused.cls, refused.error_code) == (stunproto.ERROR, 403), refused
        for _ in range(5):
            client.send_indication(peer.address, b"must not arrive")
        # A Binding on the same socket is answered after the indications: they were processed.
        assert stunproto.binding(relay.host, relay.port, sock=client.sock) is not None
        relay.wait_metric("fz_relay_send_indications_in_total", lambda v: v >= 5)
        assert relay.metrics()["fz_relay_relayed_bytes_to_peers_total"] == 0
        assert peer.received == []
    finally:
        client.close()


@pytest.mark.parametrize("channel,accepted", [
    (0x4000, True), (0x4FFF, True),  # RFC 8656's range
    (0x5000, True), (0x791B, True), (0x7FFF, True),  # RFC 5766's wider range, used by uclient
    (0x3FFF, False), (0x8000, False), (0xFFFF, False),  # never channel numbers
], ids=lambda v: hex(v) if isinstance(v, int) and not isinstance(v, bool) else str(v))
def test_channel_bind_accepts_the_numbers_uclient_uses_and_refuses_the_rest(
        start_relay, counting_peer, channel, accepted):
    relay = start_relay("--user", "alice:alice-pass", "--allow-loopback-peers")
    peer = counting_peer(echo=True)
    client = stunproto.TurnClient(relay.address, "alice", "alice-pass")
    try:
        assert client.allocate().cls == stunproto.SUCCESS
        resp = client.channel_bind(channel, peer.address)
        if not accepted:
            assert (resp.cls, resp.error_code) == (stunproto.ERROR, 400), (resp.error_code, resp.error_reason)
            return
        assert resp.cls == stunproto.SUCCESS, (resp.error_code, resp.error_reason)
        client.sock.sendto(stunproto.channel_data(channel, b"ping"), relay.address)
        client.sock.settimeout(2)
        data, _ = client.sock.recvfrom(2048)
        assert data[:8] == stunproto.channel_data(channel, b"ping"), data
    finally:
        client.close()
