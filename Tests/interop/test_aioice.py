"""fz-relay against aioice's TURN client (an independent Python implementation)."""

from __future__ import annotations

import asyncio
import os

import pytest
from aioice import stun as aioice_stun
from aioice.turn import create_turn_endpoint

import stunproto

SECRET = "aioice-rest-secret"


class EchoProtocol(asyncio.DatagramProtocol):
    """The peer: a plain UDP echo on 127.0.0.1."""

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


class Collector(asyncio.DatagramProtocol):
    """What arrives on the relayed transport, as a queue of (data, peer address)."""

    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.errors: list[Exception] = []
        self.closed = asyncio.Event()

    def connection_made(self, transport):
        pass

    def datagram_received(self, data, addr):
        self.queue.put_nowait((data, addr))

    def connection_lost(self, exc):
        # aioice calls this once the allocation is deleted (Refresh with LIFETIME 0).
        self.closed.set()

    def error_received(self, exc):
        self.errors.append(exc)
        self.queue.put_nowait((exc, None))


async def start_echo_peer():
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(EchoProtocol, local_addr=("127.0.0.1", 0))
    return transport, transport.get_extra_info("sockname")[:2]


async def round_trip(turn, collector: Collector, peer, payload: bytes, timeout: float = 3.0):
    """Sends `payload` to `peer` through the relay and waits for the echo."""
    turn.sendto(payload, peer)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        data, addr = await asyncio.wait_for(collector.queue.get(), max(left, 0.001))
        if isinstance(data, Exception):
            raise data
        if data == payload:
            assert tuple(addr) == tuple(peer), (addr, peer)
            return data


async def allocate_and_echo(server, username, password, messages: int = 20, transport: str = "udp"):
    echo_transport, peer = await start_echo_peer()
    turn = collector = None
    try:
        turn, collector = await asyncio.wait_for(
            create_turn_endpoint(Collector, server_addr=server, username=username, password=password,
                                 transport=transport),
            timeout=10,
        )
        relayed = turn.get_extra_info("sockname")
        mapped = turn.get_extra_info("related_address")
        assert relayed[0] == "127.0.0.1" and 40000 <= relayed[1] <= 59999, relayed
        assert mapped[0] == "127.0.0.1", mapped
        for i in range(messages):
            payload = f"{i}:".encode() + os.urandom(64 + i)
            await round_trip(turn, collector, peer, payload)
        return relayed
    finally:
        if turn is not None:
            turn.close()
            await asyncio.wait_for(collector.closed.wait(), timeout=5)
        echo_transport.close()


def test_aioice_allocates_with_a_static_user_and_echoes_through_the_relay(start_relay):
    relay = start_relay("--user", "alice:alice-pass", "--allow-loopback-peers", metrics=True)
    asyncio.run(allocate_and_echo(relay.address, "alice", "alice-pass"))
    relay.wait_metric("fz_relay_channel_data_in_total", lambda v: v >= 20)
    relay.wait_metric("fz_relay_peer_packets_in_total", lambda v: v >= 20)
    # aioice deleted its allocation on close.
    relay.wait_metric("fz_relay_allocations", lambda v: v == 0)
    relay.wait_metric("fz_relay_allocations_deleted_total", lambda v: v == 1)


def test_aioice_over_tcp_allocates_and_echoes_through_the_relay(start_relay):
    """aioice's TURN client with transport="tcp": the allocation lives on the TCP connection
    and ends with it."""
    relay = start_relay("--user", "alice:alice-pass", "--allow-loopback-peers", metrics=True)
    asyncio.run(allocate_and_echo(relay.address, "alice", "alice-pass", transport="tcp"))
    relay.wait_metric("fz_relay_peer_packets_in_total", lambda v: v >= 20)
    relay.wait_metric("fz_relay_allocations", lambda v: v == 0)


def test_aioice_allocates_with_rest_credentials_and_echoes_through_the_relay(start_relay):
    relay = start_relay("--static-auth-secret", SECRET, "--allow-loopback-peers")
    username, password = stunproto.rest_credentials(SECRET, "aioice-user")
    asyncio.run(allocate_and_echo(relay.address, username, password))


def test_aioice_with_expired_rest_credentials_is_refused(start_relay):
    relay = start_relay("--static-auth-secret", SECRET, "--allow-loopback-peers")
    username, password = stunproto.rest_credentials(SECRET, "aioice-user", ttl=-60)

    async def attempt():
        with pytest.raises(aioice_stun.TransactionFailed) as info:
            await asyncio.wait_for(
                create_turn_endpoint(Collector, server_addr=relay.address,
                                     username=username, password=password),
                timeout=10,
            )
        return info.value.response

    response = asyncio.run(attempt())
    assert response.attributes["ERROR-CODE"][0] == 401, response


def test_aioice_with_a_wrong_password_is_refused(start_relay):
    relay = start_relay("--user", "alice:alice-pass", "--allow-loopback-peers")

    async def attempt():
        with pytest.raises(aioice_stun.TransactionFailed) as info:
            await asyncio.wait_for(
                create_turn_endpoint(Collector, server_addr=relay.address,
                                     username="alice", password="not-her-password"),
                timeout=10,
            )
        return info.value.response

    response = asyncio.run(attempt())
    assert response.attributes["ERROR-CODE"][0] == 401, response
