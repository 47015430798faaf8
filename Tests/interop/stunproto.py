"""A small, independent STUN/TURN codec for the interop tests (RFC 8489 / RFC 8656).

Only what the tests need: building requests and indications with long-term
credentials (MESSAGE-INTEGRITY over HMAC-SHA1, FINGERPRINT), parsing responses,
XOR address coding and ChannelData framing. Written from the RFCs, not from the
relay's sources, so that it checks the relay rather than mirroring it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import socket
import struct
import time
import zlib
from dataclasses import dataclass, field

MAGIC_COOKIE = 0x2112A442

# Methods
BINDING = 0x001
ALLOCATE = 0x003
REFRESH = 0x004
SEND = 0x006
DATA = 0x007
CREATE_PERMISSION = 0x008
CHANNEL_BIND = 0x009

# Classes
REQUEST = 0b00
INDICATION = 0b01
SUCCESS = 0b10
ERROR = 0b11

# Attributes
MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
CHANNEL_NUMBER = 0x000C
LIFETIME = 0x000D
XOR_PEER_ADDRESS = 0x0012
DATA_ATTR = 0x0013
REALM = 0x0014
NONCE = 0x0015
XOR_RELAYED_ADDRESS = 0x0016
REQUESTED_TRANSPORT = 0x0019
XOR_MAPPED_ADDRESS = 0x0020
SOFTWARE = 0x8022
FINGERPRINT = 0x8028

UDP_TRANSPORT = bytes([17, 0, 0, 0])


def message_type(method: int, cls: int) -> int:
    """The 14-bit STUN message type from method and class (RFC 8489 section 5)."""
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((cls & 0b01) << 4)
        | ((cls & 0b10) << 7)
    )


def split_type(t: int) -> tuple[int, int]:
    method = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80)
    cls = ((t >> 4) & 0b01) | ((t >> 7) & 0b10)
    return method, cls


def pad4(n: int) -> int:
    return (4 - n % 4) % 4


def encode_attr(atype: int, value: bytes) -> bytes:
    return struct.pack("!HH", atype, len(value)) + value + bytes(pad4(len(value)))


def xor_address(ip: str, port: int, txid: bytes) -> bytes:
    addr = ipaddress.ip_address(ip)
    xport = port ^ (MAGIC_COOKIE >> 16)
    if addr.version == 4:
        xip = int(addr) ^ MAGIC_COOKIE
        return struct.pack("!BBHI", 0, 1, xport, xip)
    key = int.from_bytes(struct.pack("!I", MAGIC_COOKIE) + txid, "big")
    xip = (int(addr) ^ key).to_bytes(16, "big")
    return struct.pack("!BBH", 0, 2, xport) + xip


def decode_xor_address(value: bytes, txid: bytes) -> tuple[str, int]:
    family = value[1]
    port = struct.unpack("!H", value[2:4])[0] ^ (MAGIC_COOKIE >> 16)
    if family == 1:
        ip = int.from_bytes(value[4:8], "big") ^ MAGIC_COOKIE
        return str(ipaddress.IPv4Address(ip)), port
    if family == 2:
        key = int.from_bytes(struct.pack("!I", MAGIC_COOKIE) + txid, "big")
        ip = int.from_bytes(value[4:20], "big") ^ key
        return str(ipaddress.IPv6Address(ip)), port
    raise ValueError(f"unknown address family {family}")


def long_term_key(username: str, realm: str, password: str) -> bytes:
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).digest()


def rest_credentials(secret: str, name: str, ttl: int = 3600) -> tuple[str, str]:
    """TURN REST API credentials: '<unix expiry>:name' and base64(HMAC-SHA1(secret, username))."""
    username = f"{int(time.time()) + ttl}:{name}"
    password = base64.b64encode(
        hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    ).decode()
    return username, password


def new_txid() -> bytes:
    return os.urandom(12)


def encode(
    method: int,
    cls: int,
    attrs: list[tuple[int, bytes]] = (),
    txid: bytes | None = None,
    key: bytes | None = None,
    fingerprint: bool = False,
) -> bytes:
    """A STUN message; with `key`, MESSAGE-INTEGRITY (HMAC-SHA1) is appended, then FINGERPRINT."""
    txid = txid or new_txid()
    body = b"".join(encode_attr(t, v) for t, v in attrs)
    mtype = message_type(method, cls)
    if key is not None:
        # The length covers the MESSAGE-INTEGRITY attribute (24 bytes) (RFC 8489 section 14.5).
        header = struct.pack("!HHI", mtype, len(body) + 24, MAGIC_COOKIE) + txid
        mac = hmac.new(key, header + body, hashlib.sha1).digest()
        body += encode_attr(MESSAGE_INTEGRITY, mac)
    if fingerprint:
        header = struct.pack("!HHI", mtype, len(body) + 8, MAGIC_COOKIE) + txid
        crc = (zlib.crc32(header + body) & 0xFFFFFFFF) ^ 0x5354554E
        body += encode_attr(FINGERPRINT, struct.pack("!I", crc))
    return struct.pack("!HHI", mtype, len(body), MAGIC_COOKIE) + txid + body


@dataclass
class Message:
    method: int
    cls: int
    txid: bytes
    attrs: list[tuple[int, bytes]] = field(default_factory=list)

    def get(self, atype: int) -> bytes | None:
        for t, v in self.attrs:
            if t == atype:
                return v
        return None

    @property
    def error_code(self) -> int | None:
        v = self.get(ERROR_CODE)
        if v is None:
            return None
        return (v[2] & 0x7) * 100 + v[3]

    @property
    def error_reason(self) -> str:
        v = self.get(ERROR_CODE)
        return v[4:].decode(errors="replace") if v else ""

    def xor_address(self, atype: int) -> tuple[str, int] | None:
        v = self.get(atype)
        return None if v is None else decode_xor_address(v, self.txid)


def is_stun(data: bytes) -> bool:
    return (
        len(data) >= 20
        and data[0] < 4
        and struct.unpack("!I", data[4:8])[0] == MAGIC_COOKIE
    )


def decode(data: bytes) -> Message:
    if not is_stun(data):
        raise ValueError("not a STUN message")
    mtype, length = struct.unpack("!HH", data[:4])
    if length + 20 != len(data) or length % 4:
        raise ValueError(f"bad length {length} for a {len(data)}-byte datagram")
    method, cls = split_type(mtype)
    txid = data[8:20]
    attrs = []
    pos = 20
    while pos + 4 <= len(data):
        t, n = struct.unpack("!HH", data[pos : pos + 4])
        if pos + 4 + n > len(data):
            raise ValueError("attribute overruns the message")
        attrs.append((t, data[pos + 4 : pos + 4 + n]))
        pos += 4 + n + pad4(n)
    return Message(method, cls, txid, attrs)


def channel_data(channel: int, payload: bytes) -> bytes:
    return struct.pack("!HH", channel, len(payload)) + payload


def binding_request(txid: bytes | None = None) -> bytes:
    """The smallest Binding request: a bare 20-byte header."""
    return struct.pack("!HHI", message_type(BINDING, REQUEST), 0, MAGIC_COOKIE) + (
        txid or new_txid()
    )


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def binding(host: str, port: int, timeout: float = 0.5, sock: socket.socket | None = None):
    """One Binding transaction; the mapped address, or None if no matching answer in time."""
    own = sock is None
    if own:
        sock = socket.socket(family_of(host), socket.SOCK_DGRAM)
    try:
        txid = new_txid()
        sock.settimeout(timeout)
        sock.sendto(binding_request(txid), (host, port))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            try:
                data, _ = sock.recvfrom(2048)
            except (socket.timeout, ConnectionRefusedError):
                return None
            if len(data) < 20 or data[8:20] != txid:
                continue  # someone else's answer
            msg = decode(data)
            if (msg.method, msg.cls) != (BINDING, SUCCESS):
                raise AssertionError(f"Binding answered with {msg}")
            return msg.xor_address(XOR_MAPPED_ADDRESS)
    finally:
        if own:
            sock.close()


class TurnClient:
    """A blocking TURN client over one UDP socket, enough to drive the relay by hand."""

    def __init__(self, server: tuple[str, int], username: str, password: str, timeout: float = 2.0):
        self.server = server
        self.username = username
        self.password = password
        self.timeout = timeout
        self.sock = socket.socket(family_of(server[0]), socket.SOCK_DGRAM)
        self.sock.bind(("::1" if ":" in server[0] else "127.0.0.1", 0))
        self.realm: str | None = None
        self.nonce: bytes | None = None
        self.key: bytes | None = None
        self.relayed: tuple[str, int] | None = None

    def close(self) -> None:
        self.sock.close()

    def transact(self, raw: bytes, txid: bytes) -> Message:
        """Sends `raw`, retransmitting (RFC 8489 timers, shortened) until its answer arrives."""
        deadline = time.monotonic() + self.timeout
        rto = 0.1
        next_send = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"no answer from {self.server}")
            if now >= next_send:
                self.sock.sendto(raw, self.server)
                next_send = now + rto
                rto *= 2
            self.sock.settimeout(max(0.001, min(next_send, deadline) - now))
            try:
                data, _ = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            if is_stun(data) and data[8:20] == txid:
                return decode(data)

    def request(self, method: int, attrs) -> Message:
        """An authenticated request; learns REALM/NONCE from a 401/438 and retries once.

        `attrs` is a list of (type, value), or a function of the transaction ID giving one
        (XOR-PEER-ADDRESS of an IPv6 peer depends on it)."""
        for _ in range(3):
            txid = new_txid()
            full = list(attrs(txid) if callable(attrs) else attrs)
            key = None
            if self.key is not None:
                full += [
                    (USERNAME, self.username.encode()),
                    (REALM, self.realm.encode()),
                    (NONCE, self.nonce),
                ]
                key = self.key
            resp = self.transact(encode(method, REQUEST, full, txid, key=key, fingerprint=True), txid)
            if resp.cls == ERROR and resp.error_code in (401, 438) and resp.get(NONCE):
                if resp.error_code == 401 and self.key is not None:
                    return resp  # real authentication failure
                self.nonce = resp.get(NONCE)
                self.realm = (resp.get(REALM) or self.realm.encode()).decode()
                self.key = long_term_key(self.username, self.realm, self.password)
                continue
            return resp
        return resp

    def allocate(self) -> Message:
        resp = self.request(ALLOCATE, [(REQUESTED_TRANSPORT, UDP_TRANSPORT), (LIFETIME, struct.pack("!I", 600))])
        if resp.cls == SUCCESS:
            self.relayed = resp.xor_address(XOR_RELAYED_ADDRESS)
        return resp

    def create_permission(self, peer: tuple[str, int]) -> Message:
        return self.request(CREATE_PERMISSION, lambda txid: [(XOR_PEER_ADDRESS, xor_address(peer[0], peer[1], txid))])

    def channel_bind(self, channel: int, peer: tuple[str, int]) -> Message:
        return self.request(
            CHANNEL_BIND,
            lambda txid: [
                (CHANNEL_NUMBER, struct.pack("!HH", channel, 0)),
                (XOR_PEER_ADDRESS, xor_address(peer[0], peer[1], txid)),
            ],
        )

    def send_indication(self, peer: tuple[str, int], payload: bytes) -> bytes:
        txid = new_txid()
        raw = encode(SEND, INDICATION, [(XOR_PEER_ADDRESS, xor_address(peer[0], peer[1], txid)), (DATA_ATTR, payload)], txid)
        self.sock.sendto(raw, self.server)
        return raw
