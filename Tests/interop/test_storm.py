"""A storm of garbage and mutated STUN/TURN datagrams: the relay survives and keeps working.

100,000 datagrams from four sockets (two of them own allocations, one is IPv6): random
bytes of random lengths 0..1500, and single mutations (bit flips, truncations, message
and attribute length changes, attribute type changes, trailing garbage) of valid
Binding, Allocate (with and without credentials), Refresh, CreatePermission and
ChannelBind requests, Send indications and ChannelData frames.

Safety: the relay may relay mutated Send indications and ChannelData. All of them point
at a sink socket this test owns: the XOR-PEER-ADDRESS attribute and the magic cookie of
Send indications are never mutated, their DATA is all zeros (a shifted attribute walk
finds nothing there), and only one channel is bound (to the sink). So nothing the storm
makes the relay send leaves for another process's port.
"""

from __future__ import annotations

import os
import random
import select
import socket
import struct
import time

import stunproto as s
from conftest import UCLIENT_LOAD, assert_clean_echo, run_uclient, wait_for

TOTAL = 100_000
DURATION = 12.0  # seconds the storm is paced over
USER, PASSWORD = "storm", "storm-pass"
CHANNEL = 0x4000


class Template:
    """A valid datagram and the byte ranges a mutation must leave alone."""

    def __init__(self, name: str, raw: bytes, protected=(), stun: bool = True):
        self.name = name
        self.raw = raw
        self.protected = list(protected)
        self.stun = stun
        # Offsets of attribute headers, for length and type mutations.
        self.attrs = []
        if stun:
            pos = 20
            while pos + 4 <= len(raw):
                t, n = struct.unpack("!HH", raw[pos:pos + 4])
                self.attrs.append((pos, t))
                pos += 4 + n + s.pad4(n)

    def allowed(self, start: int, end: int) -> bool:
        return all(end <= a or start >= b for a, b in self.protected)


def challenge(sock: socket.socket, server) -> tuple[str, bytes]:
    """REALM and NONCE from an unauthenticated Allocate sent on `sock`."""
    txid = s.new_txid()
    raw = s.encode(s.ALLOCATE, s.REQUEST, [(s.REQUESTED_TRANSPORT, s.UDP_TRANSPORT)], txid)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        sock.sendto(raw, server)
        sock.settimeout(0.2)
        try:
            data, _ = sock.recvfrom(2048)
        except socket.timeout:
            continue
        if s.is_stun(data) and data[8:20] == txid:
            m = s.decode(data)
            assert m.error_code == 401, m
            return m.get(s.REALM).decode(), m.get(s.NONCE)
    raise AssertionError("no 401 challenge from the relay")


def templates_for(realm: str, nonce: bytes, peer, allocated: bool) -> list[Template]:
    key = s.long_term_key(USER, realm, PASSWORD)
    auth = [(s.USERNAME, USER.encode()), (s.REALM, realm.encode()), (s.NONCE, nonce)]
    out = [
        Template("binding", s.binding_request()),
        Template("binding+fingerprint", s.encode(s.BINDING, s.REQUEST, [(s.SOFTWARE, b"storm")], fingerprint=True)),
        Template("allocate", s.encode(s.ALLOCATE, s.REQUEST, [(s.REQUESTED_TRANSPORT, s.UDP_TRANSPORT),
                                                               (s.LIFETIME, struct.pack("!I", 600))],
                                      fingerprint=True)),
        Template("allocate+auth", s.encode(s.ALLOCATE, s.REQUEST,
                                           [(s.REQUESTED_TRANSPORT, s.UDP_TRANSPORT),
                                            (s.LIFETIME, struct.pack("!I", 600))] + auth,
                                           key=key, fingerprint=True)),
    ]
    if allocated:
        txid = s.new_txid()
        out += [
            Template("refresh+auth", s.encode(s.REFRESH, s.REQUEST, [(s.LIFETIME, struct.pack("!I", 600))] + auth,
                                              key=key, fingerprint=True)),
            Template("permission+auth", s.encode(
                s.CREATE_PERMISSION, s.REQUEST,
                [(s.XOR_PEER_ADDRESS, s.xor_address(peer[0], peer[1], txid))] + auth,
                txid=txid, key=key, fingerprint=True)),
            Template("channelbind+auth", s.encode(
                s.CHANNEL_BIND, s.REQUEST,
                [(s.CHANNEL_NUMBER, struct.pack("!HH", CHANNEL, 0)),
                 (s.XOR_PEER_ADDRESS, s.xor_address(peer[0], peer[1], txid))] + auth,
                txid=txid, key=key, fingerprint=True)),
            Template("channelbind", s.encode(
                s.CHANNEL_BIND, s.REQUEST,
                [(s.CHANNEL_NUMBER, struct.pack("!HH", CHANNEL + 1, 0)),
                 (s.XOR_PEER_ADDRESS, s.xor_address(peer[0], peer[1], txid))], txid=txid)),
        ]
        for size in (0, 1, 37, 200, 1100):
            txid = s.new_txid()
            raw = s.encode(s.SEND, s.INDICATION,
                           [(s.XOR_PEER_ADDRESS, s.xor_address(peer[0], peer[1], txid)),
                            (s.DATA_ATTR, bytes(size))], txid)
            # The cookie and the whole XOR-PEER-ADDRESS attribute (header at 20, 12 bytes).
            out.append(Template(f"send{size}", raw, protected=[(4, 8), (20, 32)]))
        for size in (0, 3, 100, 1000):
            out.append(Template(f"channeldata{size}", s.channel_data(CHANNEL, bytes(size) + bytes(s.pad4(size))),
                                stun=False))
    return out


def mutate(rng: random.Random, t: Template) -> bytes:
    """One mutation of a template, never touching its protected ranges."""
    raw = bytearray(t.raw)
    for _ in range(20):
        op = rng.randrange(7)
        if op <= 1:  # bit flips
            flips = rng.choice((1, 1, 1, 2, 3, 8))
            positions = [rng.randrange(len(raw)) for _ in range(flips)]
            if all(t.allowed(p, p + 1) for p in positions):
                for p in positions:
                    raw[p] ^= 1 << rng.randrange(8)
                return bytes(raw)
        elif op == 2:  # truncation
            cut = rng.randrange(len(raw)) if len(raw) > 0 else 0
            if t.allowed(cut, len(raw)):
                return bytes(raw[:cut])
        elif op == 3:  # the message (or ChannelData) length field
            value = rng.choice((0, 1, 3, 4, 0xFFFF, rng.randrange(0x10000),
                                max(0, len(raw) - 20 - 4), len(raw) - 20 + 4, len(raw)))
            raw[2:4] = struct.pack("!H", value & 0xFFFF)
            return bytes(raw)
        elif op == 4 and t.attrs:  # an attribute's length field
            pos, _ = rng.choice(t.attrs)
            if t.allowed(pos + 2, pos + 4):
                raw[pos + 2:pos + 4] = struct.pack("!H", rng.choice((0, 1, 3, 5, 0xFFFF, rng.randrange(0x10000))))
                return bytes(raw)
        elif op == 5 and t.attrs:  # an attribute's type
            pos, old = rng.choice(t.attrs)
            new = rng.choice((rng.randrange(0x10000), rng.randrange(0x8000), s.MESSAGE_INTEGRITY,
                              s.FINGERPRINT, s.USERNAME, s.LIFETIME, s.CHANNEL_NUMBER, s.NONCE,
                              s.REQUESTED_TRANSPORT, 0x0017, 0x001D, 0x8029, 0x001C))
            if new == s.XOR_PEER_ADDRESS or new == old:
                continue
            if t.allowed(pos, pos + 2):
                raw[pos:pos + 2] = struct.pack("!H", new)
                return bytes(raw)
        elif op == 6:  # trailing garbage (zeros for Send, whose tail must not parse as a peer)
            extra = bytes(rng.randrange(1, 64)) if t.protected else rng.randbytes(rng.randrange(1, 64))
            return bytes(raw) + extra
    return bytes(raw[: len(raw) // 2])


def random_garbage(rng: random.Random) -> bytes:
    n = rng.randrange(0, 1501)
    data = bytearray(rng.randbytes(n))
    # Make a share of it look like STUN or ChannelData at first glance.
    kind = rng.randrange(4)
    if kind == 1 and n >= 8:
        data[0] &= 0x03
        data[4:8] = struct.pack("!I", s.MAGIC_COOKIE)
    elif kind == 2 and n >= 4:
        data[0] = 0x40 | (data[0] & 0x0F)
    return bytes(data)


def drain(socks, counts):
    while True:
        readable, _, _ = select.select(socks, [], [], 0)
        if not readable:
            return
        for sk in readable:
            try:
                sk.recvfrom(65535)
                counts[sk.fileno()] = counts.get(sk.fileno(), 0) + 1
            except BlockingIOError:
                pass


def test_relay_survives_a_storm_of_malformed_datagrams(start_relay, echo_peer, counting_peer):
    seed = int(os.environ.get("FZ_STORM_SEED", random.randrange(1 << 32)))
    rng = random.Random(seed)
    relay = start_relay("--user", f"{USER}:{PASSWORD}", "--allow-loopback-peers",
                        listen=("127.0.0.1", "::1"), metrics=True)
    v4 = ("127.0.0.1", relay.port)
    v6 = ("::1", relay.port)
    sink = counting_peer()

    # Sockets A and A2 own allocations with a permission and a channel to the sink.
    a = s.TurnClient(v4, USER, PASSWORD)
    a2 = s.TurnClient(v4, USER, PASSWORD)
    sockets = []
    try:
        for client in (a, a2):
            assert client.allocate().cls == s.SUCCESS
            assert client.create_permission(sink.address).cls == s.SUCCESS
            assert client.channel_bind(CHANNEL, sink.address).cls == s.SUCCESS
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b.bind(("127.0.0.1", 0))
        c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        c.bind(("::1", 0))
        sockets = [b, c]
        senders = [
            (a.sock, v4, templates_for(a.realm, a.nonce, sink.address, True)),
            (a2.sock, v4, templates_for(a2.realm, a2.nonce, sink.address, True)),
            (b, v4, templates_for(*challenge(b, v4), sink.address, False)),
            (c, v6, templates_for(*challenge(c, v6), sink.address, False)),
        ]
        all_socks = [a.sock, a2.sock, b, c]
        for sk in all_socks:
            sk.setblocking(False)
            sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

        replies: dict[int, int] = {}
        kinds: dict[str, int] = {}
        t0 = time.monotonic()
        batch = 200
        for i in range(TOTAL):
            sock, dest, templates = senders[i % len(senders)]
            if rng.random() < 0.3:
                data, name = random_garbage(rng), "random"
            else:
                t = rng.choice(templates)
                data, name = mutate(rng, t), t.name
            kinds[name] = kinds.get(name, 0) + 1
            while True:
                try:
                    sock.sendto(data, dest)
                    break
                except BlockingIOError:
                    select.select([], [sock], [], 0.05)
                except (ConnectionRefusedError, OSError) as e:
                    if not relay.alive():
                        raise AssertionError(f"relay died during the storm (seed {seed}): {e}")
                    break
            if i % batch == batch - 1:
                drain(all_socks, replies)
                # Pace: datagram i is due at t0 + i * DURATION / TOTAL.
                ahead = t0 + (i + 1) * DURATION / TOTAL - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                if i % 10_000 == 9_999:
                    assert relay.alive(), f"relay died after {i + 1} datagrams (seed {seed})"
        elapsed = time.monotonic() - t0
        drain(all_socks, replies)
        info = (f"seed {seed}, {TOTAL} datagrams in {elapsed:.1f}s, "
                f"{sum(replies.values())} replies, kinds {sorted(kinds.items())}")
        print(info)
        assert elapsed < 45, info

        # Still alive, and still answering Binding on both families.
        assert relay.alive(), info
        for sk in all_socks:
            sk.setblocking(True)
        wait_for(lambda: relay.binding("127.0.0.1", timeout=0.3), 10, what="a Binding answer on 127.0.0.1")
        wait_for(lambda: relay.binding("::1", timeout=0.3), 10, what="a Binding answer on ::1")

        # The allocation that took part in the storm still relays.
        before = len(sink.received)
        marker = b"after-the-storm-" + os.urandom(8)
        a.sock.sendto(s.channel_data(CHANNEL, marker), v4)
        wait_for(lambda: any(d == marker for d, _ in sink.received[before:]), 5,
                 what="ChannelData from the stormed allocation to reach the sink")

        malformed = relay.wait_metric("fz_relay_malformed_dropped_total", lambda v: v > 0)
        print(f"fz_relay_malformed_dropped_total {malformed:.0f}")
    finally:
        a.close()
        a2.close()
        for sk in sockets:
            sk.close()

    # A real client afterwards: coturn's uclient over channels loses nothing.
    result = run_uclient(relay, echo_peer.address, "-u", USER, "-w", PASSWORD, *UCLIENT_LOAD)
    assert_clean_echo(result)
    assert relay.alive()
